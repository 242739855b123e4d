//! Partner Center client: the Referrals API and Webhooks API over HTTPS, Entra ID token acquisition
//! for the delegated flow, typed errors, and verification of webhook deliveries.
//!
//! Entry points: [`PartnerCenterClient::new`] (implements the core's
//! [`cosell_core::ports::PartnerCenter`] port), [`auth::AuthConfig`], and
//! [`webhook::WebhookVerifier`] / the pure [`webhook::verify`].

pub mod auth;
pub mod client;
pub mod error;
pub mod webhook;

pub use auth::{AuthConfig, TokenEndpoint, UserCredentials};
pub use client::{ClientConfig, CoSellReferrals, PartnerCenterClient, ValidationEvent, WebhookRegistration};
pub use cosell_core::ports::PartnerCenterError;
pub use webhook::{DeliveredEvent, Rejection, SigningCertificate, VerifierConfig, WebhookVerifier};
