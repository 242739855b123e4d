//! The status/substatus state machine (reference §1.7) and the lead / opportunity / co-sell
//! classification (§1.8), as code.

use super::model::{
    AssistanceRequestCode, MICROSOFT_ORGANIZATION_ID, Qualification, Referral, ReferralStatus, ReferralSubstatus,
    ReferralType,
};

/// A valid (status, substatus) pair. Only these seven exist (§1.7 "Substatus allowed with that status").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lifecycle {
    NewPending,
    NewReceived,
    ActiveAccepted,
    ClosedWon,
    ClosedLost,
    ClosedDeclined,
    ClosedExpired,
}

/// Why a (status, substatus) pair or a move between two pairs is not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("substatus {substatus} is not allowed with status {status}")]
    SubstatusMismatch { status: String, substatus: String },
    #[error("status {0} is not a status a referral can be in")]
    UnknownStatus(String),
    #[error("the referral is {0:?}, a terminal state: no further updates are possible")]
    Terminal(Lifecycle),
    #[error("a referral cannot move from {from:?} back to {to:?}")]
    Backwards { from: Lifecycle, to: Lifecycle },
}

impl Lifecycle {
    pub const ALL: [Lifecycle; 7] = [
        Lifecycle::NewPending,
        Lifecycle::NewReceived,
        Lifecycle::ActiveAccepted,
        Lifecycle::ClosedWon,
        Lifecycle::ClosedLost,
        Lifecycle::ClosedDeclined,
        Lifecycle::ClosedExpired,
    ];

    /// Parses the wire pair, refusing combinations the table does not allow.
    pub fn from_wire(status: &ReferralStatus, substatus: &ReferralSubstatus) -> Result<Self, TransitionError> {
        use ReferralStatus as S;
        use ReferralSubstatus as U;
        let mismatch = || TransitionError::SubstatusMismatch {
            status: status.as_str().to_owned(),
            substatus: substatus.as_str().to_owned(),
        };
        match status {
            S::New => match substatus {
                U::Pending => Ok(Self::NewPending),
                U::Received => Ok(Self::NewReceived),
                _ => Err(mismatch()),
            },
            S::Active => match substatus {
                U::Accepted => Ok(Self::ActiveAccepted),
                _ => Err(mismatch()),
            },
            S::Closed => match substatus {
                U::Won => Ok(Self::ClosedWon),
                U::Lost => Ok(Self::ClosedLost),
                U::Declined => Ok(Self::ClosedDeclined),
                U::Expired => Ok(Self::ClosedExpired),
                _ => Err(mismatch()),
            },
            S::None | S::Other(_) => Err(TransitionError::UnknownStatus(status.as_str().to_owned())),
        }
    }

    pub fn status(self) -> ReferralStatus {
        match self {
            Self::NewPending | Self::NewReceived => ReferralStatus::New,
            Self::ActiveAccepted => ReferralStatus::Active,
            Self::ClosedWon | Self::ClosedLost | Self::ClosedDeclined | Self::ClosedExpired => ReferralStatus::Closed,
        }
    }

    pub fn substatus(self) -> ReferralSubstatus {
        match self {
            Self::NewPending => ReferralSubstatus::Pending,
            Self::NewReceived => ReferralSubstatus::Received,
            Self::ActiveAccepted => ReferralSubstatus::Accepted,
            Self::ClosedWon => ReferralSubstatus::Won,
            Self::ClosedLost => ReferralSubstatus::Lost,
            Self::ClosedDeclined => ReferralSubstatus::Declined,
            Self::ClosedExpired => ReferralSubstatus::Expired,
        }
    }

    /// Won, Lost, Declined, Expired: never written again (R10).
    pub fn is_terminal(self) -> bool {
        self.status() == ReferralStatus::Closed
    }

    /// Checks a write that moves a referral from `self` to `next` (§1.7): New → New|Active|Closed,
    /// Active → Active|Closed, Closed → nothing (terminal, even to itself).
    pub fn check_move(self, next: Lifecycle) -> Result<(), TransitionError> {
        if self.is_terminal() {
            return Err(TransitionError::Terminal(self));
        }
        if self.status() == ReferralStatus::Active && next.status() == ReferralStatus::New {
            return Err(TransitionError::Backwards { from: self, to: next });
        }
        Ok(())
    }
}

/// What kind of business object a referral is (§1.8 table), which decides lead vs opportunity in the
/// CRM (R3, R8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReferralCategory {
    /// Independent + Direct, invited by Microsoft or nobody.
    MarketplaceLead,
    /// Independent + Sales/MarketingQualified, invited by Microsoft.
    QualifiedLead,
    /// Independent or Shared + SalesQualified/None, from the partner itself or an inviting partner.
    CoSellOpportunity,
}

impl ReferralCategory {
    pub fn is_lead(self) -> bool {
        matches!(self, Self::MarketplaceLead | Self::QualifiedLead)
    }
}

/// How a partner's deal is shared (§1.8 "Deal types when creating").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DealKind {
    /// Not shared with Microsoft sellers, no help requested.
    Private,
    /// Visible to Microsoft sellers, no help requested.
    PartnerLed,
    /// Help requested from Microsoft: a Shared engagement with Microsoft.
    CoSell,
}

impl Referral {
    /// The referral's state, or why its (status, substatus) pair is not one of the seven valid ones.
    pub fn lifecycle(&self) -> Result<Lifecycle, TransitionError> {
        let status = self.status.clone().unwrap_or(ReferralStatus::None);
        let substatus = self.substatus.clone().unwrap_or(ReferralSubstatus::None);
        Lifecycle::from_wire(&status, &substatus)
    }

    fn invited_by_org(&self) -> Option<&str> {
        self.invite_context
            .as_ref()
            .and_then(|c| c.invited_by.as_ref())
            .and_then(|b| b.organization_id.as_deref())
            .filter(|s| !s.is_empty())
    }

    /// Lead vs opportunity per the §1.8 table. Combinations the table does not cover (e.g. a
    /// MarketingQualified referral from a partner) are treated as opportunities: they come from a
    /// party that is not Microsoft marketing, and an opportunity is the richer CRM record.
    pub fn category(&self) -> ReferralCategory {
        let by_microsoft = self.invited_by_org().map(|o| o.eq_ignore_ascii_case(MICROSOFT_ORGANIZATION_ID));
        let independent = matches!(self.referral_type, Some(ReferralType::Independent) | None);
        match (&self.qualification, by_microsoft) {
            (Some(Qualification::Direct), None | Some(true)) if independent => ReferralCategory::MarketplaceLead,
            (Some(Qualification::SalesQualified | Qualification::MarketingQualified), Some(true)) if independent => {
                ReferralCategory::QualifiedLead
            }
            _ => ReferralCategory::CoSellOpportunity,
        }
    }

    /// Help requested from Microsoft (`inviteContext.assistanceRequestCode` set and not `Unknown`).
    pub fn help_requested(&self) -> Option<&AssistanceRequestCode> {
        self.invite_context
            .as_ref()
            .and_then(|c| c.assistance_request_code.as_ref())
            .filter(|c| !matches!(c, AssistanceRequestCode::Unknown))
    }

    /// Whether the referral is visible to Microsoft sellers (`consentToShareReferralWithMicrosoftSellers`).
    pub fn shared_with_microsoft_sellers(&self) -> bool {
        self.consent.as_ref().and_then(|c| c.consent_to_share_referral_with_microsoft_sellers).unwrap_or(false)
    }

    /// Whether this referral is Microsoft's side of an engagement (`target` names `msft`).
    pub fn targets_microsoft(&self) -> bool {
        self.target.as_deref().unwrap_or_default().iter().any(|t| t.is_microsoft())
    }

    /// Whether this is Microsoft's side of an engagement: an invitation the partner sent to Microsoft
    /// (`target` names `msft`), or Microsoft's own referral of a deal it shared with the partner
    /// (`organizationId` is `msft`). The connector syncs the partner's referral, never these.
    pub fn is_microsoft_side(&self) -> bool {
        self.targets_microsoft()
            || self.organization_id.as_deref().is_some_and(|o| o.eq_ignore_ascii_case(MICROSOFT_ORGANIZATION_ID))
    }

    /// Private, partner-led or co-sell (§1.8).
    pub fn deal_kind(&self) -> DealKind {
        let shared = matches!(self.referral_type, Some(ReferralType::Shared));
        if shared && (self.help_requested().is_some() || self.targets_microsoft()) {
            DealKind::CoSell
        } else if self.help_requested().is_some() {
            // Help asked for but not (yet) Shared: still co-sell in intent (R7 turns it into one).
            DealKind::CoSell
        } else if self.shared_with_microsoft_sellers() {
            DealKind::PartnerLed
        } else {
            DealKind::Private
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::referral::model::{InviteContext, OrganizationRef};

    #[test]
    fn every_valid_pair_round_trips_through_the_wire() {
        for l in Lifecycle::ALL {
            assert_eq!(Lifecycle::from_wire(&l.status(), &l.substatus()), Ok(l));
        }
    }

    #[test]
    fn substatus_must_belong_to_its_status() {
        let err = Lifecycle::from_wire(&ReferralStatus::Active, &ReferralSubstatus::Won).unwrap_err();
        assert!(matches!(err, TransitionError::SubstatusMismatch { .. }));
        assert!(Lifecycle::from_wire(&ReferralStatus::New, &ReferralSubstatus::Accepted).is_err());
        assert!(Lifecycle::from_wire(&ReferralStatus::Closed, &ReferralSubstatus::Pending).is_err());
        assert!(matches!(
            Lifecycle::from_wire(&ReferralStatus::Other("Engaged".into()), &ReferralSubstatus::None),
            Err(TransitionError::UnknownStatus(_))
        ));
    }

    #[test]
    fn transitions_follow_the_reference_table() {
        use Lifecycle::*;
        // New may go anywhere.
        for next in Lifecycle::ALL {
            assert_eq!(NewPending.check_move(next), Ok(()), "New -> {next:?}");
        }
        // Active may stay or close, never go back to New.
        assert_eq!(ActiveAccepted.check_move(ActiveAccepted), Ok(()));
        assert_eq!(ActiveAccepted.check_move(ClosedWon), Ok(()));
        assert!(matches!(ActiveAccepted.check_move(NewPending), Err(TransitionError::Backwards { .. })));
        // Closed is terminal, even towards itself.
        for closed in [ClosedWon, ClosedLost, ClosedDeclined, ClosedExpired] {
            assert!(closed.is_terminal());
            for next in Lifecycle::ALL {
                assert_eq!(closed.check_move(next), Err(TransitionError::Terminal(closed)));
            }
        }
    }

    proptest::proptest! {
        /// Whatever sequence of writes is attempted, a closed referral never changes again and an
        /// active one never goes back to New.
        #[test]
        fn no_write_sequence_leaves_a_terminal_state_or_reopens(moves in proptest::collection::vec(0usize..7, 1..30)) {
            let mut state = Lifecycle::NewPending;
            for m in moves {
                let next = Lifecycle::ALL[m];
                match state.check_move(next) {
                    Ok(()) => {
                        proptest::prop_assert!(!state.is_terminal());
                        proptest::prop_assert!(!(state.status() == ReferralStatus::Active && next.status() == ReferralStatus::New));
                        state = next;
                    }
                    Err(_) => proptest::prop_assert!(state.is_terminal() || next.status() == ReferralStatus::New),
                }
            }
        }
    }

    fn referral(kind: ReferralType, q: Qualification, invited_by: Option<&str>) -> Referral {
        Referral {
            referral_type: Some(kind),
            qualification: Some(q),
            invite_context: invited_by.map(|o| InviteContext {
                invited_by: Some(OrganizationRef { organization_id: Some(o.into()), ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn classification_follows_the_lead_vs_opportunity_table() {
        use Qualification::{Direct, MarketingQualified, SalesQualified};
        use ReferralType::*;
        assert_eq!(referral(Independent, Direct, Some("msft")).category(), ReferralCategory::MarketplaceLead);
        assert_eq!(referral(Independent, Direct, None).category(), ReferralCategory::MarketplaceLead);
        assert_eq!(referral(Independent, SalesQualified, Some("msft")).category(), ReferralCategory::QualifiedLead);
        assert_eq!(referral(Independent, MarketingQualified, Some("msft")).category(), ReferralCategory::QualifiedLead);
        assert_eq!(referral(Shared, SalesQualified, Some("org-1")).category(), ReferralCategory::CoSellOpportunity);
        assert_eq!(
            referral(Independent, Qualification::None, Some("org-1")).category(),
            ReferralCategory::CoSellOpportunity
        );
        assert!(referral(Independent, Direct, None).category().is_lead());
        assert!(!referral(Shared, SalesQualified, Some("org-1")).category().is_lead());
    }

    #[test]
    fn deal_kind_distinguishes_private_partner_led_and_co_sell() {
        let mut r = referral(ReferralType::Independent, Qualification::SalesQualified, None);
        assert_eq!(r.deal_kind(), DealKind::Private);
        r.consent = Some(crate::referral::model::Consent {
            consent_to_share_referral_with_microsoft_sellers: Some(true),
            ..Default::default()
        });
        assert_eq!(r.deal_kind(), DealKind::PartnerLed);
        r.referral_type = Some(ReferralType::Shared);
        r.invite_context = Some(InviteContext {
            assistance_request_code: Some(AssistanceRequestCode::ProofOfConceptOrDemo),
            ..Default::default()
        });
        assert_eq!(r.deal_kind(), DealKind::CoSell);
        // `Unknown` is what non-co-sell payloads carry: not a request for help.
        r.invite_context =
            Some(InviteContext { assistance_request_code: Some(AssistanceRequestCode::Unknown), ..Default::default() });
        assert_eq!(r.deal_kind(), DealKind::PartnerLed);
    }
}
