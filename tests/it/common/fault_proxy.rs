//! A fault-injecting HTTP proxy on 127.0.0.1, between a worker and moto: requests pass
//! through unchanged unless a rule matches them, and then are held (a stalled connection, until
//! released), black-holed (never answered while the rule lasts), answered with an error status
//! (S3 XML or SQS JSON), delayed, or cut off (the connection closed with no answer). A rule
//! can match the SQS action (`X-Amz-Target`) and the request body, apply a limited number of
//! times, and last only for a scheduled window. Loopback only.
//!
//! The worker is pointed at [`FaultProxy::endpoint`] instead of moto's (`aws.endpoint_url`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use tokio::sync::watch;

/// What happens to a matching request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Not answered until [`FaultProxy::release`]; then forwarded.
    Hold,
    /// Answered at once with this status and body, never forwarded.
    Status(u16, &'static str),
    /// Forwarded after this delay.
    Delay(Duration),
    /// Never answered while the rule is active (the client's time-out ends it); afterwards,
    /// forwarded.
    BlackHole,
    /// The connection is closed without an answer (as a reset by a load balancer).
    Reset,
    /// Forwarded at once (the upstream acts on it: an `If-Match` passes), but its answer is
    /// held until [`FaultProxy::release`]: a slow response, reordering two jobs.
    HoldAnswer,
}

impl Fault {
    /// A short name, for the counts of [`FaultProxy::faults_by_kind`].
    pub fn name(&self) -> &'static str {
        match self {
            Fault::Hold => "hold",
            Fault::HoldAnswer => "hold_answer",
            Fault::Status(status, body) if body.contains("SlowDown") => {
                if *status == 503 {
                    "s3_503_slow_down"
                } else {
                    "slow_down"
                }
            }
            Fault::Status(_, body) if body.contains("Throttl") => "throttling",
            Fault::Status(status, _) if *status >= 500 => "server_error",
            Fault::Status(..) => "client_error",
            Fault::Delay(_) => "latency",
            Fault::BlackHole => "black_hole",
            Fault::Reset => "reset",
        }
    }
}

/// SQS's JSON error for `code` (e.g. `InternalError`, `RequestThrottled`).
pub fn sqs_error(status: u16, code: &'static str) -> Fault {
    let body = format!(r#"{{"__type":"com.amazonaws.sqs#{code}","message":"injected {code}"}}"#);
    Fault::Status(status, Box::leak(body.into_boxed_str()))
}

/// S3's `503 SlowDown`.
pub fn s3_slow_down() -> Fault {
    Fault::Status(
        503,
        "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
    )
}

/// Which requests a fault applies to: the method (any if `None`) and a path prefix; optionally
/// the SQS action, a piece of the body, a number of times and a time window.
#[derive(Debug, Clone)]
pub struct Rule {
    pub method: Option<&'static str>,
    pub path_prefix: String,
    pub fault: Fault,
    /// The end of `X-Amz-Target` (SQS's JSON protocol names the action there).
    pub action: Option<&'static str>,
    pub body_contains: Option<String>,
    /// Applies to this many requests, then no more.
    remaining: Option<Arc<AtomicUsize>>,
    /// Active from the first instant until the second.
    window: Option<(Instant, Instant)>,
}

impl Rule {
    pub fn new(method: Option<&'static str>, path_prefix: impl Into<String>, fault: Fault) -> Rule {
        Rule {
            method,
            path_prefix: path_prefix.into(),
            fault,
            action: None,
            body_contains: None,
            remaining: None,
            window: None,
        }
    }

    /// Any SQS call of this action (`GetQueueAttributes`, `ReceiveMessage`…).
    pub fn sqs(action: &'static str, fault: Fault) -> Rule {
        Rule {
            action: Some(action),
            ..Rule::new(Some("POST"), "/", fault)
        }
    }

    pub fn body_contains(mut self, text: impl Into<String>) -> Rule {
        self.body_contains = Some(text.into());
        self
    }

    /// Only the first `n` matching requests.
    pub fn times(mut self, n: usize) -> Rule {
        self.remaining = Some(Arc::new(AtomicUsize::new(n)));
        self
    }

    /// Only from `start` after now, for `length`.
    pub fn during(mut self, start: Duration, length: Duration) -> Rule {
        let from = Instant::now() + start;
        self.window = Some((from, from + length));
        self
    }

    fn active(&self, now: Instant) -> bool {
        self.window.is_none_or(|(from, to)| from <= now && now < to)
    }

    fn matches(&self, method: &str, path: &str, action: &str, body: &[u8]) -> bool {
        self.method.is_none_or(|m| m == method)
            && path.starts_with(&self.path_prefix)
            && self.action.is_none_or(|a| action.ends_with(a))
            && self.body_contains.as_ref().is_none_or(|text| {
                body.windows(text.len().max(1))
                    .any(|w| w == text.as_bytes())
            })
            && self.active(Instant::now())
    }

    /// Takes one of its remaining uses (always true without a limit).
    fn take(&self) -> bool {
        self.remaining.as_ref().is_none_or(|left| {
            left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        })
    }
}

struct Shared {
    upstream: String,
    client: reqwest::Client,
    rules: Mutex<Vec<Rule>>,
    /// Flips to true on release: held requests go on.
    released: watch::Sender<bool>,
    held: AtomicUsize,
    faulted: AtomicUsize,
    by_kind: Mutex<BTreeMap<&'static str, usize>>,
}

pub struct FaultProxy {
    pub endpoint: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FaultProxy {
    /// A proxy to `upstream` (an `http://127.0.0.1:…` endpoint) that forwards everything.
    pub async fn start(upstream: &str) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            client: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("a reqwest client"),
            rules: Mutex::new(Vec::new()),
            released: watch::channel(false).0,
            held: AtomicUsize::new(0),
            faulted: AtomicUsize::new(0),
            by_kind: Mutex::new(BTreeMap::new()),
        });
        let server_shared = shared.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let shared = server_shared.clone();
                tokio::spawn(async move {
                    // An `Err` from the service closes the connection without an answer.
                    let service = hyper::service::service_fn(move |request| {
                        let shared = shared.clone();
                        async move { handle(&shared, request).await.ok_or(ConnectionReset) }
                    });
                    let _ = ConnBuilder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        FaultProxy {
            endpoint,
            shared,
            server,
        }
    }

    pub fn add(&self, rule: Rule) {
        self.shared.rules.lock().unwrap().push(rule);
    }

    /// Lets held requests (and later matching ones) through, and drops every rule.
    pub fn release(&self) {
        self.shared.rules.lock().unwrap().clear();
        self.shared.released.send_replace(true);
    }

    /// Requests being held now.
    pub fn held(&self) -> usize {
        self.shared.held.load(Ordering::SeqCst)
    }

    /// Requests a rule has applied to so far.
    pub fn faulted(&self) -> usize {
        self.shared.faulted.load(Ordering::SeqCst)
    }

    /// Requests faulted so far, by [`Fault::name`].
    pub fn faults_by_kind(&self) -> BTreeMap<&'static str, usize> {
        self.shared.by_kind.lock().unwrap().clone()
    }
}

/// What a `Reset` fault makes the connection end with.
#[derive(Debug)]
struct ConnectionReset;

impl std::fmt::Display for ConnectionReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset by the fault proxy")
    }
}

impl std::error::Error for ConnectionReset {}

/// The answer, or `None` to close the connection without one.
async fn handle(shared: &Shared, request: Request<Incoming>) -> Option<Response<Full<Bytes>>> {
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return Some(bad_gateway(format!("reading the request body: {e}"))),
    };
    let action = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (fault, window_end) = {
        let rules = shared.rules.lock().unwrap();
        rules
            .iter()
            .find(|r| r.matches(parts.method.as_str(), parts.uri.path(), action, &body) && r.take())
            .map(|r| (r.fault.clone(), r.window.map(|(_, to)| to)))
            .unzip()
    };
    if let Some(fault) = &fault {
        shared.faulted.fetch_add(1, Ordering::SeqCst);
        *shared
            .by_kind
            .lock()
            .unwrap()
            .entry(fault.name())
            .or_default() += 1;
    }
    match fault {
        None => {}
        Some(Fault::Status(status, body)) => {
            let content_type = if body.starts_with('{') {
                "application/x-amz-json-1.0"
            } else {
                "application/xml"
            };
            return Some(
                Response::builder()
                    .status(status)
                    .header("content-type", content_type)
                    .body(Full::new(Bytes::from_static(body.as_bytes())))
                    .unwrap(),
            );
        }
        Some(Fault::Delay(delay)) => tokio::time::sleep(delay).await,
        Some(Fault::Reset) => return None,
        Some(Fault::Hold) => hold(shared).await,
        Some(Fault::HoldAnswer) => {
            let answer = forward(shared, parts, body).await;
            hold(shared).await;
            return Some(answer);
        }
        Some(Fault::BlackHole) => {
            // Until the rule's window ends or everything is released; a client that gave up
            // meanwhile has closed the connection, and this answer goes nowhere.
            let until = window_end
                .flatten()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(600));
            let mut released = shared.released.subscribe();
            tokio::select! {
                _ = released.wait_for(|r| *r) => {}
                _ = tokio::time::sleep_until(until.into()) => {}
            }
        }
    }
    Some(forward(shared, parts, body).await)
}

/// Waits for [`FaultProxy::release`], counted in [`FaultProxy::held`] meanwhile.
async fn hold(shared: &Shared) {
    shared.held.fetch_add(1, Ordering::SeqCst);
    let mut released = shared.released.subscribe();
    let _ = released.wait_for(|r| *r).await;
    shared.held.fetch_sub(1, Ordering::SeqCst);
}

async fn forward(
    shared: &Shared,
    parts: hyper::http::request::Parts,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{path_and_query}", shared.upstream);
    let mut upstream = shared.client.request(parts.method, url).body(body);
    for (name, value) in &parts.headers {
        if name != hyper::header::HOST {
            upstream = upstream.header(name, value);
        }
    }
    let answer = match upstream.send().await {
        Ok(answer) => answer,
        Err(e) => return bad_gateway(format!("forwarding: {e}")),
    };
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        // The body is passed on whole: its framing is the proxy's own.
        if name != hyper::header::TRANSFER_ENCODING && name != hyper::header::CONNECTION {
            response = response.header(name, value);
        }
    }
    match answer.bytes().await {
        Ok(bytes) => response.body(Full::new(bytes)).unwrap(),
        Err(e) => bad_gateway(format!("reading the answer: {e}")),
    }
}

fn bad_gateway(why: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(502)
        .body(Full::new(Bytes::from(why)))
        .unwrap()
}
