//! A fault-injecting HTTP proxy on 127.0.0.1, between a worker and moto: requests pass
//! through unchanged unless a rule matches them, and then are held (a stalled connection, until
//! released), answered with an error status, or delayed. Loopback only.
//!
//! The worker is pointed at [`FaultProxy::endpoint`] instead of moto's (`aws.endpoint_url`).

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    /// Forwarded at once (the upstream acts on it: an `If-Match` passes), but its answer is
    /// held until [`FaultProxy::release`]: a slow response, reordering two jobs.
    HoldAnswer,
}

/// Which requests a fault applies to: the method (any if `None`) and a path prefix.
#[derive(Debug, Clone)]
pub struct Rule {
    pub method: Option<&'static str>,
    pub path_prefix: String,
    pub fault: Fault,
    /// How many more requests it applies to (`None`: every one).
    pub remaining: Option<usize>,
}

impl Rule {
    pub fn new(method: Option<&'static str>, path_prefix: impl Into<String>, fault: Fault) -> Rule {
        Rule {
            method,
            path_prefix: path_prefix.into(),
            fault,
            remaining: None,
        }
    }

    /// Applies to the first `n` matching requests only.
    pub fn times(self, n: usize) -> Rule {
        Rule {
            remaining: Some(n),
            ..self
        }
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.method.is_none_or(|m| m == method) && path.starts_with(&self.path_prefix)
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
        });
        let server_shared = shared.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let shared = server_shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(handle(&shared, request).await) }
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
}

async fn handle(shared: &Shared, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = request.method().as_str().to_string();
    let path = request.uri().path().to_string();
    let fault = {
        let mut rules = shared.rules.lock().unwrap();
        rules
            .iter_mut()
            .find(|r| r.remaining != Some(0) && r.matches(&method, &path))
            .map(|r| {
                r.remaining = r.remaining.map(|n| n - 1);
                r.fault.clone()
            })
    };
    if fault.is_some() {
        shared.faulted.fetch_add(1, Ordering::SeqCst);
    }
    match fault {
        None => {}
        Some(Fault::Status(status, body)) => {
            return Response::builder()
                .status(status)
                .header("content-type", "application/xml")
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap();
        }
        Some(Fault::Delay(delay)) => tokio::time::sleep(delay).await,
        Some(Fault::Hold) => hold(shared).await,
        Some(Fault::HoldAnswer) => {
            let answer = forward(shared, request).await;
            hold(shared).await;
            return answer;
        }
    }
    forward(shared, request).await
}

/// Waits for [`FaultProxy::release`], counted in [`FaultProxy::held`] meanwhile.
async fn hold(shared: &Shared) {
    shared.held.fetch_add(1, Ordering::SeqCst);
    let mut released = shared.released.subscribe();
    let _ = released.wait_for(|r| *r).await;
    shared.held.fetch_sub(1, Ordering::SeqCst);
}

async fn forward(shared: &Shared, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{path_and_query}", shared.upstream);
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return bad_gateway(format!("reading the request body: {e}")),
    };
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
