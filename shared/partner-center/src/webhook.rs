//! Verification of Partner Center webhook deliveries (reference §2.4–§2.5, R1).
//!
//! [`verify`] is pure: headers + raw body + an already-fetched certificate → the event or a
//! [`Rejection`]. [`WebhookVerifier`] adds the certificate URL allow-list (https only, no redirects),
//! fetching and caching, optional chain checks against configured trust anchors, and logging.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use cosell_core::referral::ResourceChangeEvent;
use http::HeaderMap;
use tokio::sync::Mutex;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

/// Bodies larger than this are refused (the real callbacks are a few hundred bytes).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// The organisation Microsoft's sample requires in the certificate issuer.
pub const DEFAULT_ORGANIZATION: &str = "Microsoft Corporation";
/// The host Microsoft serves the signing certificate from (seen in docs and the wild).
pub const MICROSOFT_CERT_HOST: &str = "3psostorageacct.blob.core.windows.net";

/// Why a delivery was refused. Each has its own reason (for logs/metrics) and HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("Content-Type must be application/json, got {0:?}")]
    WrongContentType(String),
    #[error("body of {size} bytes exceeds the {max}-byte limit")]
    BodyTooLarge { size: usize, max: usize },
    #[error("no signature: neither `Authorization: Signature …` nor `x-ms-signature` is present")]
    MissingSignature,
    #[error("the signature header is not `Signature <base64>`")]
    MalformedSignature,
    #[error("signature algorithm {0:?} is not rsa-sha256")]
    UnsupportedAlgorithm(String),
    #[error("no X-MS-Certificate-Url header")]
    MissingCertificateUrl,
    #[error("certificate URL {0:?} is not on the allow-list (https, allowed host, default port, no userinfo/query)")]
    CertificateUrlNotAllowed(String),
    #[error("could not fetch the signing certificate: {0}")]
    CertificateUnavailable(String),
    #[error("the signing certificate is unusable: {0}")]
    CertificateInvalid(String),
    #[error("the signing certificate does not chain to a trusted root")]
    CertificateUntrusted,
    #[error("the signing certificate's {field} organisation is not {expected:?}")]
    WrongOrganization { field: &'static str, expected: String },
    #[error("the signature does not match the body")]
    BadSignature,
    #[error("the body is not a Partner Center event: {0}")]
    MalformedBody(String),
}

impl Rejection {
    /// A stable, short reason for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::WrongContentType(_) => "wrong_content_type",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::MissingSignature => "missing_signature",
            Self::MalformedSignature => "malformed_signature",
            Self::UnsupportedAlgorithm(_) => "unsupported_algorithm",
            Self::MissingCertificateUrl => "missing_certificate_url",
            Self::CertificateUrlNotAllowed(_) => "certificate_url_not_allowed",
            Self::CertificateUnavailable(_) => "certificate_unavailable",
            Self::CertificateInvalid(_) => "certificate_invalid",
            Self::CertificateUntrusted => "certificate_untrusted",
            Self::WrongOrganization { .. } => "wrong_organization",
            Self::BadSignature => "bad_signature",
            Self::MalformedBody(_) => "malformed_body",
        }
    }

    /// The status to answer with: 401 for anything that fails authentication (including a
    /// certificate that cannot be fetched: the delivery cannot be authenticated; Partner Center
    /// retries any non-2xx, so nothing is lost), 400 for a malformed request, 413 too large,
    /// 415 wrong media type.
    pub fn status(&self) -> u16 {
        match self {
            Self::WrongContentType(_) => 415,
            Self::BodyTooLarge { .. } => 413,
            Self::MalformedSignature | Self::MalformedBody(_) => 400,
            Self::CertificateUnavailable(_)
            | Self::MissingSignature
            | Self::UnsupportedAlgorithm(_)
            | Self::MissingCertificateUrl
            | Self::CertificateUrlNotAllowed(_)
            | Self::CertificateInvalid(_)
            | Self::CertificateUntrusted
            | Self::WrongOrganization { .. }
            | Self::BadSignature => 401,
        }
    }
}

/// A parsed signing certificate: what verification needs, extracted once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningCertificate {
    der: Vec<u8>,
    /// PKCS#1 `RSAPublicKey` DER.
    rsa_public_key: Vec<u8>,
    subject_organizations: Vec<String>,
    issuer_organizations: Vec<String>,
    not_before: i64,
    not_after: i64,
}

impl SigningCertificate {
    /// Parses a DER (`.cer`) or PEM certificate; it must carry an RSA key.
    pub fn parse(bytes: &[u8]) -> Result<Self, Rejection> {
        let der = if bytes.starts_with(b"-----BEGIN") {
            let (_, pem) = x509_parser::pem::parse_x509_pem(bytes)
                .map_err(|e| Rejection::CertificateInvalid(format!("bad PEM: {e}")))?;
            pem.contents
        } else {
            bytes.to_vec()
        };
        let (_, cert) =
            X509Certificate::from_der(&der).map_err(|e| Rejection::CertificateInvalid(format!("bad DER: {e}")))?;
        let spki = cert.public_key();
        match spki.parsed() {
            Ok(PublicKey::RSA(_)) => {}
            _ => return Err(Rejection::CertificateInvalid("the key is not RSA".into())),
        }
        let orgs = |name: &x509_parser::x509::X509Name<'_>| -> Vec<String> {
            name.iter_organization().filter_map(|a| a.as_str().ok()).map(str::to_owned).collect()
        };
        Ok(Self {
            rsa_public_key: spki.subject_public_key.data.to_vec(),
            subject_organizations: orgs(cert.subject()),
            issuer_organizations: orgs(cert.issuer()),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            der: der.clone(),
        })
    }

    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// Checks that both subject and issuer name `organization` (Microsoft's sample checks the issuer;
    /// hardened receivers check the subject too).
    pub fn check_organization(&self, organization: &str) -> Result<(), Rejection> {
        let has = |orgs: &[String]| orgs.iter().any(|o| o == organization);
        if !has(&self.issuer_organizations) {
            return Err(Rejection::WrongOrganization { field: "issuer", expected: organization.to_owned() });
        }
        if !has(&self.subject_organizations) {
            return Err(Rejection::WrongOrganization { field: "subject", expected: organization.to_owned() });
        }
        Ok(())
    }

    /// Whether `at` (Unix seconds) is within the validity period.
    pub fn valid_at(&self, at: i64) -> bool {
        self.not_before <= at && at <= self.not_after
    }

    /// Checks that the certificate is signed by one of `anchors` (DER).
    pub fn check_chain(&self, anchors: &[Vec<u8>]) -> Result<(), Rejection> {
        let (_, cert) =
            X509Certificate::from_der(&self.der).map_err(|e| Rejection::CertificateInvalid(format!("bad DER: {e}")))?;
        let trusted = anchors.iter().any(|a| {
            X509Certificate::from_der(a)
                .ok()
                .is_some_and(|(_, anchor)| cert.verify_signature(Some(anchor.public_key())).is_ok())
        });
        if trusted { Ok(()) } else { Err(Rejection::CertificateUntrusted) }
    }
}

/// A verified delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveredEvent {
    pub event: ResourceChangeEvent,
    /// Where the signature was found.
    pub signature_header: SignatureHeader,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureHeader {
    Authorization,
    XMsSignature,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, Rejection> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v.to_str().map(Some).map_err(|_| Rejection::MalformedSignature),
    }
}

/// Finds and decodes the signature: `Authorization: Signature <b64>`, else `x-ms-signature`
/// (`Signature <b64>` as Microsoft's sample sends it, or the bare base64).
fn signature(headers: &HeaderMap) -> Result<(Vec<u8>, SignatureHeader), Rejection> {
    // `Signature <b64>` → `<b64>`; `None` when the value does not use the Signature scheme.
    fn strip_scheme(v: &str) -> Option<&str> {
        let v = v.trim();
        let scheme = v.get(..10)?;
        scheme.eq_ignore_ascii_case("signature ").then(|| v.get(10..).unwrap_or_default().trim())
    }
    let (raw, place) = match header(headers, "authorization")?.and_then(strip_scheme) {
        Some(v) => (v, SignatureHeader::Authorization),
        None => match header(headers, "x-ms-signature")? {
            Some(v) => (strip_scheme(v).unwrap_or(v.trim()), SignatureHeader::XMsSignature),
            None => return Err(Rejection::MissingSignature),
        },
    };
    if raw.is_empty() {
        return Err(Rejection::MissingSignature);
    }
    let bytes = base64::engine::general_purpose::STANDARD.decode(raw).map_err(|_| Rejection::MalformedSignature)?;
    Ok((bytes, place))
}

/// Checks content type, size and the algorithm header: everything that needs no certificate.
pub fn precheck(headers: &HeaderMap, raw_body: &[u8], max_body_bytes: usize) -> Result<(), Rejection> {
    let ct = header(headers, "content-type").map_err(|_| Rejection::WrongContentType("<not text>".into()))?;
    let ct = ct.unwrap_or_default();
    let media = ct.split(';').next().unwrap_or_default().trim();
    if !media.eq_ignore_ascii_case("application/json") {
        return Err(Rejection::WrongContentType(ct.to_owned()));
    }
    if raw_body.len() > max_body_bytes {
        return Err(Rejection::BodyTooLarge { size: raw_body.len(), max: max_body_bytes });
    }
    signature(headers)?;
    match header(headers, "x-ms-signature-algorithm")? {
        Some(a) if a.trim().eq_ignore_ascii_case("rsa-sha256") => Ok(()),
        Some(a) => Err(Rejection::UnsupportedAlgorithm(a.to_owned())),
        // Documented as always sent; a delivery without it is not one Partner Center made.
        None => Err(Rejection::UnsupportedAlgorithm(String::new())),
    }
}

/// Verifies a delivery against an already-fetched certificate with the defaults (organisation
/// `Microsoft Corporation`, 1 MiB body cap). Pure: no I/O, no clock. See [`verify_with`].
pub fn verify(headers: &HeaderMap, raw_body: &[u8], cert: &SigningCertificate) -> Result<DeliveredEvent, Rejection> {
    verify_with(headers, raw_body, cert, DEFAULT_ORGANIZATION, DEFAULT_MAX_BODY_BYTES)
}

/// Verifies a delivery against an already-fetched certificate: content type, size, algorithm,
/// organisation, then RSASSA-PKCS1-v1_5 / SHA-256 over the exact raw body, then the body's shape.
/// Pure: no I/O, no clock.
pub fn verify_with(
    headers: &HeaderMap,
    raw_body: &[u8],
    cert: &SigningCertificate,
    organization: &str,
    max_body_bytes: usize,
) -> Result<DeliveredEvent, Rejection> {
    precheck(headers, raw_body, max_body_bytes)?;
    cert.check_organization(organization)?;
    let (sig, place) = signature(headers)?;
    let key = aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
        &cert.rsa_public_key,
    );
    key.verify(raw_body, &sig).map_err(|_| Rejection::BadSignature)?;
    let event: ResourceChangeEvent =
        serde_json::from_slice(raw_body).map_err(|e| Rejection::MalformedBody(e.to_string()))?;
    Ok(DeliveredEvent { event, signature_header: place })
}

/// Configuration of [`WebhookVerifier`].
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// Hosts the certificate may be fetched from (exact match, case-insensitive). Default: Microsoft's.
    pub allowed_cert_hosts: Vec<String>,
    /// Allowed ports besides https's default 443 (tests serve the certificate on an ephemeral port).
    pub allowed_cert_ports: Vec<u16>,
    /// Organisation required in the certificate's issuer and subject.
    pub organization: String,
    pub max_body_bytes: usize,
    /// Extra TLS roots (DER) for fetching the certificate, e.g. a simulator's test CA.
    pub extra_tls_roots: Vec<Vec<u8>>,
    /// When set, the signing certificate must be signed by one of these (DER).
    pub trust_anchors: Vec<Vec<u8>>,
    pub fetch_timeout: Duration,
    /// A certificate that fails to verify a delivery (or has expired) is fetched again, in case
    /// Microsoft rotated it behind the same URL — but at most once per this interval, so forged
    /// deliveries cannot make the receiver hammer the certificate host.
    pub refetch_interval: Duration,
    /// Test-only escape hatch: accept `http://` certificate URLs. Off by default; never enable in
    /// production (the certificate would then be spoofable on the network path).
    pub allow_insecure_http_for_tests: bool,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        Self {
            allowed_cert_hosts: vec![MICROSOFT_CERT_HOST.to_owned()],
            allowed_cert_ports: Vec::new(),
            organization: DEFAULT_ORGANIZATION.to_owned(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            extra_tls_roots: Vec::new(),
            trust_anchors: Vec::new(),
            fetch_timeout: Duration::from_secs(15),
            refetch_interval: Duration::from_secs(600),
            allow_insecure_http_for_tests: false,
        }
    }
}

impl VerifierConfig {
    /// Accepts signing certificates served from the host and port of `https_base_url` and signed by
    /// the CA `ca_der` (a test CA such as the Partner Center simulator's), which is also trusted for
    /// fetching them. Panics on a base URL without a host or port: a caller's bug.
    pub fn trusting(self, ca_der: Vec<u8>, https_base_url: &str) -> Self {
        let url = url::Url::parse(https_base_url).expect("an https base URL");
        Self {
            allowed_cert_hosts: vec![url.host_str().expect("a host").to_owned()],
            allowed_cert_ports: vec![url.port_or_known_default().expect("a port")],
            extra_tls_roots: vec![ca_der.clone()],
            trust_anchors: vec![ca_der],
            ..self
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifierBuildError {
    #[error("extra TLS root certificate {index} is not a valid DER certificate: {source}")]
    BadRoot { index: usize, source: reqwest::Error },
    #[error("building the certificate-fetching HTTP client failed: {0}")]
    Http(#[source] reqwest::Error),
}

/// Fetches, caches and checks signing certificates, then runs [`verify`].
#[derive(Debug)]
pub struct WebhookVerifier {
    config: VerifierConfig,
    http: reqwest::Client,
    cache: Mutex<HashMap<String, Cached>>,
}

#[derive(Debug, Clone)]
struct Cached {
    cert: Arc<SigningCertificate>,
    fetched_at: Instant,
}

impl WebhookVerifier {
    pub fn new(config: VerifierConfig) -> Result<Self, VerifierBuildError> {
        let mut roots = Vec::new();
        for (index, der) in config.extra_tls_roots.iter().enumerate() {
            roots.push(
                reqwest::Certificate::from_der(der).map_err(|source| VerifierBuildError::BadRoot { index, source })?,
            );
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .https_only(!config.allow_insecure_http_for_tests)
            .timeout(config.fetch_timeout)
            .tls_certs_merge(roots)
            .build()
            .map_err(VerifierBuildError::Http)?;
        Ok(Self { config, http, cache: Mutex::new(HashMap::new()) })
    }

    pub fn config(&self) -> &VerifierConfig {
        &self.config
    }

    /// Checks `X-MS-Certificate-Url` against the allow-list.
    pub fn certificate_url(&self, headers: &HeaderMap) -> Result<url::Url, Rejection> {
        let raw = header(headers, "x-ms-certificate-url")
            .map_err(|_| Rejection::MissingCertificateUrl)?
            .ok_or(Rejection::MissingCertificateUrl)?;
        let not_allowed = || Rejection::CertificateUrlNotAllowed(raw.to_owned());
        let url = url::Url::parse(raw).map_err(|_| not_allowed())?;
        let scheme_ok =
            url.scheme() == "https" || (self.config.allow_insecure_http_for_tests && url.scheme() == "http");
        let host_ok =
            url.host_str().is_some_and(|h| self.config.allowed_cert_hosts.iter().any(|a| a.eq_ignore_ascii_case(h)));
        let port_ok = url.port().is_none_or(|p| self.config.allowed_cert_ports.contains(&p));
        let clean =
            url.username().is_empty() && url.password().is_none() && url.query().is_none() && url.fragment().is_none();
        if scheme_ok && host_ok && port_ok && clean { Ok(url) } else { Err(not_allowed()) }
    }

    /// The certificate at `url`, fetched once and cached.
    pub async fn certificate(&self, url: &url::Url) -> Result<Arc<SigningCertificate>, Rejection> {
        Ok(self.cached_or_fetch(url, false).await?.0)
    }

    /// Returns the cached certificate, or fetches it; with `refresh`, fetches again if the cached
    /// copy is older than `refetch_interval`. The flag says whether a fetch happened.
    async fn cached_or_fetch(
        &self,
        url: &url::Url,
        refresh: bool,
    ) -> Result<(Arc<SigningCertificate>, bool), Rejection> {
        // Holding the lock across the fetch makes concurrent first deliveries wait for one fetch.
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.get(url.as_str())
            && (!refresh || c.fetched_at.elapsed() < self.config.refetch_interval)
        {
            return Ok((c.cert.clone(), false));
        }
        let resp =
            self.http.get(url.clone()).send().await.map_err(|e| Rejection::CertificateUnavailable(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(Rejection::CertificateUnavailable(format!("HTTP {}", resp.status())));
        }
        let bytes = resp.bytes().await.map_err(|e| Rejection::CertificateUnavailable(e.to_string()))?;
        if bytes.len() > 64 * 1024 {
            return Err(Rejection::CertificateInvalid("certificate larger than 64 KiB".into()));
        }
        let cert = SigningCertificate::parse(&bytes)?;
        if !self.config.trust_anchors.is_empty() {
            cert.check_chain(&self.config.trust_anchors)?;
        }
        let cert = Arc::new(cert);
        cache.insert(url.as_str().to_owned(), Cached { cert: cert.clone(), fetched_at: Instant::now() });
        Ok((cert, true))
    }

    fn check(
        &self,
        headers: &HeaderMap,
        raw_body: &[u8],
        cert: &SigningCertificate,
    ) -> Result<DeliveredEvent, Rejection> {
        if !cert.valid_at(chrono::Utc::now().timestamp()) {
            return Err(Rejection::CertificateInvalid("outside its validity period".into()));
        }
        verify_with(headers, raw_body, cert, &self.config.organization, self.config.max_body_bytes)
    }

    /// The whole check, for a receiver: cheap checks first (no fetch for junk), then the
    /// certificate, its validity period, and the signature.
    pub async fn verify(&self, headers: &HeaderMap, raw_body: &[u8]) -> Result<DeliveredEvent, Rejection> {
        let result = self.verify_inner(headers, raw_body).await;
        match &result {
            Ok(d) => tracing::debug!(event = %d.event.event_name, "webhook delivery verified"),
            Err(r) => tracing::warn!(reason = r.reason(), status = r.status(), error = %r, "webhook delivery rejected"),
        }
        result
    }

    async fn verify_inner(&self, headers: &HeaderMap, raw_body: &[u8]) -> Result<DeliveredEvent, Rejection> {
        precheck(headers, raw_body, self.config.max_body_bytes)?;
        let url = self.certificate_url(headers)?;
        let (cert, fresh) = self.cached_or_fetch(&url, false).await?;
        match self.check(headers, raw_body, &cert) {
            Err(Rejection::BadSignature | Rejection::CertificateInvalid(_)) if !fresh => {
                // Maybe rotated: look again (rate-limited), and judge with what we then hold.
                let (cert, _) = self.cached_or_fetch(&url, true).await?;
                self.check(headers, raw_body, &cert)
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn every_rejection_has_a_4xx_status_and_its_own_reason() {
        let all = [
            Rejection::WrongContentType(String::new()),
            Rejection::BodyTooLarge { size: 2, max: 1 },
            Rejection::MissingSignature,
            Rejection::MalformedSignature,
            Rejection::UnsupportedAlgorithm(String::new()),
            Rejection::MissingCertificateUrl,
            Rejection::CertificateUrlNotAllowed(String::new()),
            Rejection::CertificateUnavailable(String::new()),
            Rejection::CertificateInvalid(String::new()),
            Rejection::CertificateUntrusted,
            Rejection::WrongOrganization { field: "issuer", expected: String::new() },
            Rejection::BadSignature,
            Rejection::MalformedBody(String::new()),
        ];
        let reasons: std::collections::HashSet<_> = all.iter().map(Rejection::reason).collect();
        assert_eq!(reasons.len(), all.len());
        assert!(all.iter().all(|r| (400..500).contains(&r.status())));
        assert_eq!(Rejection::BodyTooLarge { size: 2, max: 1 }.status(), 413);
        assert_eq!(Rejection::WrongContentType(String::new()).status(), 415);
        assert_eq!(Rejection::MalformedSignature.status(), 400);
        assert_eq!(Rejection::BadSignature.status(), 401);
    }

    #[test]
    fn precheck_refuses_wrong_type_size_signature_and_algorithm_in_that_order() {
        let sig = ("authorization", "Signature AAAA");
        let alg = ("x-ms-signature-algorithm", "rsa-sha256");
        let json = ("content-type", "application/json; charset=utf-8");
        assert!(matches!(
            precheck(&headers(&[("content-type", "text/plain"), sig, alg]), b"{}", 10),
            Err(Rejection::WrongContentType(_))
        ));
        assert!(matches!(
            precheck(&headers(&[json, sig, alg]), b"0123456789a", 10),
            Err(Rejection::BodyTooLarge { .. })
        ));
        assert_eq!(precheck(&headers(&[json, alg]), b"{}", 10), Err(Rejection::MissingSignature));
        assert_eq!(
            precheck(&headers(&[json, ("authorization", "Bearer x"), alg]), b"{}", 10),
            Err(Rejection::MissingSignature)
        );
        assert_eq!(
            precheck(&headers(&[json, ("authorization", "Signature !!!"), alg]), b"{}", 10),
            Err(Rejection::MalformedSignature)
        );
        assert!(matches!(
            precheck(&headers(&[json, sig, ("x-ms-signature-algorithm", "rsa-sha1")]), b"{}", 10),
            Err(Rejection::UnsupportedAlgorithm(a)) if a == "rsa-sha1"
        ));
        assert_eq!(precheck(&headers(&[json, ("x-ms-signature", "Signature AAAA"), alg]), b"{}", 10), Ok(()));
        assert_eq!(precheck(&headers(&[json, ("x-ms-signature", "AAAA"), alg]), b"{}", 10), Ok(()));
    }

    proptest::proptest! {
        /// Arbitrary header values are rejected or accepted, never a panic.
        #[test]
        fn arbitrary_signature_headers_never_panic(auth in "\\PC{0,40}", ms in "[ -~]{0,40}", alg in "[ -~]{0,12}") {
            let mut h = HeaderMap::new();
            h.insert("content-type", HeaderValue::from_static("application/json"));
            if let Ok(v) = HeaderValue::from_str(&auth) { h.insert("authorization", v); }
            if let Ok(v) = HeaderValue::from_str(&ms) { h.insert("x-ms-signature", v); }
            if let Ok(v) = HeaderValue::from_str(&alg) { h.insert("x-ms-signature-algorithm", v); }
            let _ = precheck(&h, b"{}", 1024);
        }
    }

    #[test]
    fn certificate_url_must_be_https_on_an_allowed_host_without_extras() {
        let v = WebhookVerifier::new(VerifierConfig::default()).unwrap();
        let url = |u: &str| v.certificate_url(&headers(&[("x-ms-certificate-url", u)]));
        assert!(
            url("https://3psostorageacct.blob.core.windows.net/cert/pcnotifications-dispatch.microsoft.com.cer")
                .is_ok()
        );
        for bad in [
            "http://3psostorageacct.blob.core.windows.net/cert/x.cer",
            "https://evil.example/cert/x.cer",
            "https://3psostorageacct.blob.core.windows.net.evil.example/x.cer",
            "https://3psostorageacct.blob.core.windows.net:8443/x.cer",
            "https://user@3psostorageacct.blob.core.windows.net/x.cer",
            "https://3psostorageacct.blob.core.windows.net/x.cer?redirect=1",
            "not a url",
        ] {
            assert!(matches!(url(bad), Err(Rejection::CertificateUrlNotAllowed(_))), "{bad}");
        }
        assert_eq!(v.certificate_url(&HeaderMap::new()), Err(Rejection::MissingCertificateUrl));
    }
}
