//! Helpers shared by the simulators: a throw-away test PKI and an HTTPS listener for axum.

pub mod pki;
pub mod tls;
