//! A test PKI generated at start-up: a root CA, a TLS server certificate for the loopback host, and
//! RSA signing certificates. Nothing here is persisted; every simulator run has fresh keys.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256, SigningKey,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Errors while generating the test PKI (they only happen if the crypto backend fails).
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("generating a test certificate failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("building the TLS server configuration failed: {0}")]
    Tls(#[from] rustls::Error),
}

/// The simulator's own certificate authority.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

/// A certificate and its private key.
pub struct IssuedCert {
    pub cert_der: CertificateDer<'static>,
    pub key: KeyPair,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert").field("cert_der_len", &self.cert_der.len()).finish_non_exhaustive()
    }
}

impl IssuedCert {
    /// Signs `message` with the certificate's key (RSASSA-PKCS1-v1_5 / SHA-256 for RSA keys).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.key.sign(message)
    }
}

fn dn(common_name: &str, organization: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, organization);
    dn
}

impl TestCa {
    /// A new root CA whose subject carries `organization` (e.g. `Microsoft Corporation`, so that a
    /// verifier's issuer-organisation check can be exercised exactly as against the real service).
    pub fn generate(common_name: &str, organization: &str) -> Result<Self, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = dn(common_name, organization);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        Ok(Self { issuer: CertifiedIssuer::self_signed(params, key)? })
    }

    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    pub fn cert_pem(&self) -> String {
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, self.issuer.der().as_ref());
        let body: Vec<&str> = b64.as_bytes().chunks(64).filter_map(|c| std::str::from_utf8(c).ok()).collect();
        format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", body.join("\n"))
    }

    /// A TLS server certificate for `hosts` (DNS names or IP addresses).
    pub fn issue_server(&self, hosts: &[&str]) -> Result<IssuedCert, PkiError> {
        let mut params = CertificateParams::new(hosts.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>())?;
        params.distinguished_name = dn(hosts.first().copied().unwrap_or("localhost"), "Co-sell Connector simulator");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert { cert_der: cert.der().clone(), key })
    }

    /// An RSA-2048 signing certificate with the given subject (used to sign webhook bodies).
    pub fn issue_rsa_signer(&self, common_name: &str, organization: &str) -> Result<IssuedCert, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = dn(common_name, organization);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate_for(&PKCS_RSA_SHA256)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert { cert_der: cert.der().clone(), key })
    }
}

/// A rustls server configuration presenting `leaf` (and the CA, so clients see the whole chain).
pub fn server_config(leaf: &IssuedCert, ca: &TestCa) -> Result<Arc<rustls::ServerConfig>, PkiError> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![leaf.cert_der.clone(), ca.cert_der()], key)?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsa_signer_signs_with_pkcs1_sha256_verifiable_by_its_public_key() {
        let ca = TestCa::generate("Test Root", "Microsoft Corporation").unwrap();
        let signer = ca.issue_rsa_signer("pcnotifications-dispatch.microsoft.com", "Microsoft Corporation").unwrap();
        let sig = signer.sign(b"body").unwrap();
        let public = aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
            signer.key.public_key_raw(),
        );
        assert!(public.verify(b"body", &sig).is_ok());
        assert!(public.verify(b"bodY", &sig).is_err());
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----\n"));
    }
}
