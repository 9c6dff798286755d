//! `resizeq-presign`: short-lived upload URLs bound to one server-chosen key, one content
//! type, a size limit and the caller's identity, so clients upload straight to S3 without
//! credentials and without the URL becoming a free file host.
//!
//! - [`config`]: the `presign` section (+ shared `aws`) of the common config file.
//! - [`auth`]: bearer JWTs (HS256, or RS256/ES256 from a JWKS) and hashed API keys.
//! - [`policy`]: SigV4 POST policy signing (the SDK has none), pure and known-answer tested.
//! - [`s3`]: presigned PUT and POST (policy) through the [`s3::UploadSigner`] port (its SDK
//!   implementation is `crate::adapters::presign_s3`: no SDK type is named here).
//! - [`server`]: the axum routes and layers: per-address limits in front of everything,
//!   per-caller rate limits, request time-out, CORS, body limit; [`metrics`]: the catalogue.
//! - [`conn`]: the accept loop: connection cap, header-read and keep-alive time-outs.
//!
//! Builds without the image codecs: nothing here touches `crate::pipeline`.

pub mod auth;
pub mod config;
pub mod conn;
pub mod error;
pub mod front_door;
pub mod metrics;
pub mod policy;
pub mod s3;
pub mod server;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use config::SidecarConfig;

/// How often idle per-caller rate-limit state and stale histogram data are dropped.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(60);

/// The sidecar, built: its router and how to serve it.
pub struct Sidecar {
    pub router: axum::Router,
    server: config::ServerConfig,
}

/// The sidecar for `config`, signing through `signer`, plus a housekeeping task (rate-limiter
/// memory, metrics upkeep) that ends with the runtime. Needs a tokio runtime (a JWKS URL is
/// fetched in the background).
pub fn build(config: &SidecarConfig, signer: Arc<dyn s3::UploadSigner>) -> Result<Sidecar> {
    let auth = auth::Authenticator::new(&config.presign.auth)?;
    let presigner = s3::S3Presigner::new(signer, config.bucket());
    let handle = metrics::install_recorder();
    let state = server::AppState::new(config.presign.clone(), auth, presigner, handle);
    let weak = Arc::downgrade(&state);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(HOUSEKEEPING_INTERVAL);
        loop {
            tick.tick().await;
            let Some(state) = weak.upgrade() else { break };
            state.housekeeping();
        }
    });
    Ok(Sidecar {
        router: server::router(state),
        server: config.presign.server.clone(),
    })
}

/// Serves `sidecar` on `listener` until `shutdown` completes, then lets requests in flight
/// finish (they are all short: signing is local).
pub async fn serve(
    listener: tokio::net::TcpListener,
    sidecar: Sidecar,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    conn::serve(listener, sidecar.router, &sidecar.server, shutdown).await
}
