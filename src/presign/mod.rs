//! `resizeq-presign`: short-lived upload URLs bound to one server-chosen key, one content
//! type, a size limit and the caller's identity, so clients upload straight to S3 without
//! credentials and without the URL becoming a free file host.
//!
//! - [`config`]: the `presign` section (+ shared `aws`) of the common config file.
//! - [`auth`]: bearer JWTs (HS256, or RS256/ES256 from a JWKS) and hashed API keys.
//! - [`policy`]: SigV4 POST policy signing (the SDK has none), pure and known-answer tested.
//! - [`s3`]: presigned PUT and POST (policy) through the [`s3::UploadSigner`] port (its SDK
//!   implementation is `crate::adapters::presign_s3`: no SDK type is named here).
//! - [`server`]: the axum routes, rate limiting, CORS, body limit; [`metrics`]: the catalogue.
//!
//! Builds without the image codecs: nothing here touches `crate::pipeline`.

pub mod auth;
pub mod config;
pub mod metrics;
pub mod policy;
pub mod s3;
pub mod server;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use config::SidecarConfig;

/// How often idle per-caller rate-limit state and stale histogram data are dropped.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(60);

/// The router for `config`, signing through `signer`, plus a housekeeping task (rate-limiter
/// memory, metrics upkeep) that ends with the runtime.
pub fn build(config: &SidecarConfig, signer: Arc<dyn s3::UploadSigner>) -> Result<axum::Router> {
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
            state.limiter.retain_recent();
            state.limiter.shrink_to_fit();
            state.metrics.run_upkeep();
        }
    });
    Ok(server::router(state))
}

/// Serves `router` on `listener` until `shutdown` completes, then lets requests in flight
/// finish (they are all short: signing is local).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("presign server: {e}")))
}
