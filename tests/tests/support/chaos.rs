//! A fault-injecting reverse proxy on loopback, put between the connector and an API (Partner
//! Center, a CRM, the AWS emulator, the webhook receiver). A seeded RNG picks which requests it
//! refuses; a refused request never reaches the service (what a 429 or a 5xx from a gateway
//! means), and every other request is forwarded unchanged, its answer returned with the service's
//! own URL rewritten to the proxy's (token responses and paging links then keep going through it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The shape of the refusals: plain HTTP APIs get 429 (no `Retry-After`) and 5xx with a JSON body;
/// AWS gets the 500/503 its SDKs classify as transient (AWS throttles with 400 and an error code, not 429).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    Http,
    Aws,
}

#[derive(Debug, Default)]
pub struct Counts {
    pub forwarded: AtomicU64,
    pub refused: AtomicU64,
}

#[derive(Debug)]
struct Proxy {
    upstream: String,
    own: String,
    rate: f64,
    flavour: Flavour,
    rng: Mutex<StdRng>,
    http: reqwest::Client,
    counts: Arc<Counts>,
}

/// A listening proxy; [`ChaosProxy::url`] is what the connector is configured with.
#[derive(Debug)]
pub struct ChaosProxy {
    pub url: String,
    pub counts: Arc<Counts>,
    listener: Option<tokio::net::TcpListener>,
}

impl ChaosProxy {
    /// Binds first, so that a service that must know its public URL (Dataverse's token scope) can be
    /// started with it; [`ChaosProxy::serve`] then starts forwarding.
    pub async fn bind() -> ChaosProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        ChaosProxy { url, counts: Arc::default(), listener: Some(listener) }
    }

    /// Forwards to `upstream` (`http://host:port`, no trailing slash), refusing `rate` of the requests.
    pub fn serve(&mut self, upstream: &str, rate: f64, seed: u64, flavour: Flavour) {
        let listener = self.listener.take().expect("served once");
        let proxy = Arc::new(Proxy {
            upstream: upstream.trim_end_matches('/').to_owned(),
            own: self.url.clone(),
            rate,
            flavour,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client"),
            counts: self.counts.clone(),
        });
        let app = axum::Router::new().fallback(forward).with_state(proxy);
        tokio::spawn(async move { axum::serve(listener, app).await });
    }

    pub fn refused(&self) -> u64 {
        self.counts.refused.load(Ordering::Relaxed)
    }

    pub fn forwarded(&self) -> u64 {
        self.counts.forwarded.load(Ordering::Relaxed)
    }
}

const HOP_BY_HOP: [&str; 5] = ["host", "content-length", "transfer-encoding", "connection", "keep-alive"];

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            to.append(name.clone(), value.clone());
        }
    }
}

fn refusal(flavour: Flavour, pick: u32) -> Response {
    let (status, body) = match (flavour, pick % 5) {
        (Flavour::Aws, n) if n % 2 == 0 => (
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"__type":"ServiceUnavailable","message":"injected by the chaos proxy"}"#,
        ),
        (Flavour::Aws, _) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"__type":"InternalFailure","message":"injected by the chaos proxy"}"#,
        ),
        (Flavour::Http, 0) => (StatusCode::TOO_MANY_REQUESTS, r#"{"error":{"code":"429","message":"injected"}}"#),
        (Flavour::Http, 1) => (StatusCode::INTERNAL_SERVER_ERROR, r#"{"error":{"code":"500","message":"injected"}}"#),
        (Flavour::Http, 2) => (StatusCode::BAD_GATEWAY, r#"{"error":{"code":"502","message":"injected"}}"#),
        (Flavour::Http, 3) => (StatusCode::SERVICE_UNAVAILABLE, r#"{"error":{"code":"503","message":"injected"}}"#),
        (Flavour::Http, _) => (StatusCode::GATEWAY_TIMEOUT, r#"{"error":{"code":"504","message":"injected"}}"#),
    };
    let content_type = if flavour == Flavour::Aws { "application/x-amz-json-1.0" } else { "application/json" };
    (status, [(axum::http::header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn forward(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let refuse = {
        let mut rng = proxy.rng.lock().unwrap_or_else(|e| e.into_inner());
        rng.gen_bool(proxy.rate).then(|| rng.r#gen::<u32>())
    };
    if let Some(pick) = refuse {
        proxy.counts.refused.fetch_add(1, Ordering::Relaxed);
        return refusal(proxy.flavour, pick);
    }
    proxy.counts.forwarded.fetch_add(1, Ordering::Relaxed);
    let (parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let mut headers = HeaderMap::new();
    copy_headers(&parts.headers, &mut headers);
    let sent =
        proxy.http.request(parts.method, format!("{}{path}", proxy.upstream)).headers(headers).body(body).send().await;
    let upstream = match sent {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, format!("chaos proxy: upstream failed: {e}")).into_response(),
    };
    let status = upstream.status();
    let mut response_headers = HeaderMap::new();
    copy_headers(upstream.headers(), &mut response_headers);
    let bytes = upstream.bytes().await.unwrap_or_default();
    let bytes = match std::str::from_utf8(&bytes) {
        Ok(text) if text.contains(&proxy.upstream) => text.replace(&proxy.upstream, &proxy.own).into_bytes(),
        _ => bytes.to_vec(),
    };
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    *response.headers_mut() = response_headers;
    if let Some(location) = response.headers().get("location").and_then(|l| l.to_str().ok()) {
        let rewritten = location.replace(&proxy.upstream, &proxy.own);
        if let Ok(v) = HeaderValue::from_str(&rewritten) {
            response.headers_mut().insert(HeaderName::from_static("location"), v);
        }
    }
    response
}
