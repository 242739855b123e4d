//! Country names → ISO 3166-1 alpha-2, for CRMs whose country field holds names (R12, seeds'
//! troubleshooting: "a two-letter country code is required"). Extended or overridden by
//! `[country] names` in the configuration.

use crate::referral::CountryCode;

use super::config::{CountryStorage, SyncConfig};

/// English short names and common variants.
const NAMES: &[(&str, &str)] = &[
    ("afghanistan", "AF"),
    ("albania", "AL"),
    ("algeria", "DZ"),
    ("andorra", "AD"),
    ("angola", "AO"),
    ("argentina", "AR"),
    ("armenia", "AM"),
    ("australia", "AU"),
    ("austria", "AT"),
    ("azerbaijan", "AZ"),
    ("bahamas", "BS"),
    ("bahrain", "BH"),
    ("bangladesh", "BD"),
    ("barbados", "BB"),
    ("belarus", "BY"),
    ("belgium", "BE"),
    ("belize", "BZ"),
    ("benin", "BJ"),
    ("bermuda", "BM"),
    ("bhutan", "BT"),
    ("bolivia", "BO"),
    ("bosnia and herzegovina", "BA"),
    ("botswana", "BW"),
    ("brazil", "BR"),
    ("brunei", "BN"),
    ("bulgaria", "BG"),
    ("burkina faso", "BF"),
    ("cambodia", "KH"),
    ("cameroon", "CM"),
    ("canada", "CA"),
    ("chile", "CL"),
    ("china", "CN"),
    ("colombia", "CO"),
    ("costa rica", "CR"),
    ("cote d'ivoire", "CI"),
    ("côte d'ivoire", "CI"),
    ("ivory coast", "CI"),
    ("croatia", "HR"),
    ("cuba", "CU"),
    ("cyprus", "CY"),
    ("czechia", "CZ"),
    ("czech republic", "CZ"),
    ("denmark", "DK"),
    ("dominican republic", "DO"),
    ("ecuador", "EC"),
    ("egypt", "EG"),
    ("el salvador", "SV"),
    ("estonia", "EE"),
    ("ethiopia", "ET"),
    ("fiji", "FJ"),
    ("finland", "FI"),
    ("france", "FR"),
    ("georgia", "GE"),
    ("germany", "DE"),
    ("ghana", "GH"),
    ("greece", "GR"),
    ("guatemala", "GT"),
    ("honduras", "HN"),
    ("hong kong", "HK"),
    ("hungary", "HU"),
    ("iceland", "IS"),
    ("india", "IN"),
    ("indonesia", "ID"),
    ("iraq", "IQ"),
    ("ireland", "IE"),
    ("israel", "IL"),
    ("italy", "IT"),
    ("jamaica", "JM"),
    ("japan", "JP"),
    ("jordan", "JO"),
    ("kazakhstan", "KZ"),
    ("kenya", "KE"),
    ("korea", "KR"),
    ("south korea", "KR"),
    ("republic of korea", "KR"),
    ("kuwait", "KW"),
    ("kyrgyzstan", "KG"),
    ("laos", "LA"),
    ("latvia", "LV"),
    ("lebanon", "LB"),
    ("libya", "LY"),
    ("liechtenstein", "LI"),
    ("lithuania", "LT"),
    ("luxembourg", "LU"),
    ("macao", "MO"),
    ("macau", "MO"),
    ("madagascar", "MG"),
    ("malawi", "MW"),
    ("malaysia", "MY"),
    ("maldives", "MV"),
    ("mali", "ML"),
    ("malta", "MT"),
    ("mauritius", "MU"),
    ("mexico", "MX"),
    ("moldova", "MD"),
    ("monaco", "MC"),
    ("mongolia", "MN"),
    ("montenegro", "ME"),
    ("morocco", "MA"),
    ("mozambique", "MZ"),
    ("myanmar", "MM"),
    ("namibia", "NA"),
    ("nepal", "NP"),
    ("netherlands", "NL"),
    ("the netherlands", "NL"),
    ("new zealand", "NZ"),
    ("nicaragua", "NI"),
    ("niger", "NE"),
    ("nigeria", "NG"),
    ("north macedonia", "MK"),
    ("norway", "NO"),
    ("oman", "OM"),
    ("pakistan", "PK"),
    ("panama", "PA"),
    ("papua new guinea", "PG"),
    ("paraguay", "PY"),
    ("peru", "PE"),
    ("philippines", "PH"),
    ("poland", "PL"),
    ("portugal", "PT"),
    ("puerto rico", "PR"),
    ("qatar", "QA"),
    ("romania", "RO"),
    ("russia", "RU"),
    ("russian federation", "RU"),
    ("rwanda", "RW"),
    ("saudi arabia", "SA"),
    ("senegal", "SN"),
    ("serbia", "RS"),
    ("singapore", "SG"),
    ("slovakia", "SK"),
    ("slovenia", "SI"),
    ("south africa", "ZA"),
    ("spain", "ES"),
    ("sri lanka", "LK"),
    ("sweden", "SE"),
    ("switzerland", "CH"),
    ("taiwan", "TW"),
    ("tajikistan", "TJ"),
    ("tanzania", "TZ"),
    ("thailand", "TH"),
    ("trinidad and tobago", "TT"),
    ("tunisia", "TN"),
    ("turkey", "TR"),
    ("türkiye", "TR"),
    ("turkiye", "TR"),
    ("uganda", "UG"),
    ("ukraine", "UA"),
    ("united arab emirates", "AE"),
    ("uae", "AE"),
    ("united kingdom", "GB"),
    ("uk", "GB"),
    ("great britain", "GB"),
    ("united states", "US"),
    ("united states of america", "US"),
    ("usa", "US"),
    ("uruguay", "UY"),
    ("uzbekistan", "UZ"),
    ("venezuela", "VE"),
    ("vietnam", "VN"),
    ("viet nam", "VN"),
    ("yemen", "YE"),
    ("zambia", "ZM"),
    ("zimbabwe", "ZW"),
];

/// Why a stored country cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CountryProblem {
    Missing,
    Unknown(String),
}

/// The ISO code of the value stored in the CRM's country field.
pub fn country_code(stored: Option<&str>, config: &SyncConfig) -> Result<CountryCode, CountryProblem> {
    let raw = stored.map(str::trim).filter(|s| !s.is_empty()).ok_or(CountryProblem::Missing)?;
    if raw.len() == 2
        && let Ok(code) = CountryCode::parse(raw)
    {
        return Ok(code);
    }
    if config.country.stored_as == CountryStorage::Name {
        let lower = raw.to_lowercase();
        let configured = config.country.names.iter().find(|(n, _)| n.to_lowercase() == lower).map(|(_, c)| c.as_str());
        let known = NAMES.iter().find(|(n, _)| *n == lower).map(|(_, c)| *c);
        if let Some(code) = configured.or(known).and_then(|c| CountryCode::parse(c).ok()) {
            return Ok(code);
        }
    }
    Err(CountryProblem::Unknown(raw.to_owned()))
}

/// The value to store in the CRM's country field for an ISO code.
pub fn country_for_crm(code: &str, config: &SyncConfig) -> String {
    let code = code.to_ascii_uppercase();
    if config.country.stored_as == CountryStorage::Name {
        if let Some((name, _)) = config.country.names.iter().find(|(_, c)| c.eq_ignore_ascii_case(&code)) {
            return name.clone();
        }
        if let Some((name, _)) = NAMES.iter().find(|(_, c)| *c == code) {
            return title_case(name);
        }
    }
    code
}

fn title_case(s: &str) -> String {
    s.split(' ')
        .map(|w| {
            if matches!(w, "and" | "of" | "the") {
                return w.to_owned();
            }
            let mut c = w.chars();
            c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crm::CrmKind;

    #[test]
    fn codes_are_accepted_and_names_need_the_name_setting() {
        let mut config = SyncConfig::defaults(CrmKind::Dynamics);
        assert_eq!(country_code(Some("us"), &config).unwrap().as_str(), "US");
        assert_eq!(country_code(Some(" "), &config), Err(CountryProblem::Missing));
        assert_eq!(country_code(Some("Germany"), &config), Err(CountryProblem::Unknown("Germany".into())));
        config.country.stored_as = CountryStorage::Name;
        assert_eq!(country_code(Some("Germany"), &config).unwrap().as_str(), "DE");
        assert_eq!(country_code(Some("united states"), &config).unwrap().as_str(), "US");
        config.country.names.insert("Deutschland".into(), "DE".into());
        assert_eq!(country_code(Some("DEUTSCHLAND"), &config).unwrap().as_str(), "DE");
        assert_eq!(country_for_crm("DE", &config), "Deutschland");
        assert_eq!(country_for_crm("us", &config), "United States");
        assert_eq!(country_for_crm("GB", &SyncConfig::defaults(CrmKind::Dynamics)), "GB");
    }
}
