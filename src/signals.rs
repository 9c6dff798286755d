//! The process around a command: the tokio runtime it runs on and shutdown on SIGTERM or
//! SIGINT, the same for `resizeq run`, the operator tools and (codecs or not) the presign
//! sidecar.
//!
//! The first signal asks for a clean stop (the command finishes what is in flight, reports
//! and exits); a second one exits at once with code 130, for an operator who will not wait.

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::{Error, Result};

/// The multi-threaded runtime every command runs on.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new()
        .map_err(|e| Error::io(format!("cannot start the async runtime: {e}")))
}

/// A token cancelled on the first SIGTERM or SIGINT, logged with `what` (what the command
/// does now, e.g. "finishing jobs in flight"); the second signal exits the process with 130.
/// Call it inside the runtime: the handlers are in place when it returns, so no signal
/// between this call and the first poll kills the process the default way.
pub fn cancel_on_signals(what: &'static str) -> Result<CancellationToken> {
    let listen = |kind: SignalKind, name: &str| {
        signal(kind).map_err(|e| Error::io(format!("cannot handle {name}: {e}")))
    };
    let mut signals = Signals {
        term: listen(SignalKind::terminate(), "SIGTERM")?,
        int: listen(SignalKind::interrupt(), "SIGINT")?,
    };
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let name = signals.next().await;
        info!(signal = name, "shutdown requested: {what}");
        cancel.cancel();
        let name = signals.next().await;
        warn!(signal = name, "second signal: exiting now");
        std::process::exit(130);
    });
    Ok(token)
}

/// Both streams, registered once: a signal between the first and the second wait is kept.
struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn the_first_sigterm_cancels_the_token() {
        let token = cancel_on_signals("stopping the test").unwrap();
        assert!(!token.is_cancelled());
        // SAFETY: kill(2) on our own pid; the handler above is installed, so the process
        // does not stop.
        assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGTERM) }, 0);
        tokio::time::timeout(Duration::from_secs(10), token.cancelled())
            .await
            .expect("cancelled by SIGTERM");
    }
}
