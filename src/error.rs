//! Typed errors: every failure says whether retrying can help.
//!
//! The worker acts on [`Error::is_permanent`]: permanent failures (the input is not an image,
//! is corrupt, or is over a limit) go to the dead-letter queue at once with their
//! [`ErrorKind`]; transient ones (I/O, throttling, a service that is down) are retried later.

use std::fmt;

/// What went wrong, as a bounded set: used as the `error_kind` metric label and DLQ attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The bytes are not one of the formats we decode (or not an image at all).
    Unsupported,
    /// The bytes claim a supported format but cannot be decoded.
    Corrupt,
    /// The input is over a configured limit (bytes, pixels, frames).
    TooLarge,
    /// The configuration cannot work (bad variant, bad template).
    Config,
    /// Encoding an output failed.
    Encode,
    /// Local or remote I/O that may succeed on retry.
    Io,
    /// A queue or storage service failed in a way that may pass (throttling, 5xx, timeouts).
    Service,
    /// Credentials or a policy refused the call: retried by jobs (an operator's fix makes
    /// them pass, see `adapters::aws`), but it ends the process at start-up.
    Denied,
    /// A message body that is not an event we understand.
    Poison,
    /// A job panicked; treated as permanent for that message.
    Panic,
    /// Work given up because the worker is shutting down; the message is released.
    Cancelled,
    /// A transient fault outlasted every receive planned within the queue's redrive policy: the
    /// worker dead-letters the message itself, with the last error as the reason.
    TransientExhausted,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Config => "config",
            ErrorKind::Encode => "encode",
            ErrorKind::Io => "io",
            ErrorKind::Service => "service",
            ErrorKind::Denied => "denied",
            ErrorKind::Poison => "poison",
            ErrorKind::Panic => "panic",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::TransientExhausted => "transient_exhausted",
        }
    }

    /// Only I/O and service faults (and refusals an operator fixes) can pass without the
    /// request changing; everything else fails the same way every time, so retrying it only
    /// delays the dead-letter queue.
    pub fn is_permanent(self) -> bool {
        !matches!(
            self,
            ErrorKind::Io | ErrorKind::Service | ErrorKind::Denied | ErrorKind::Cancelled
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error with its kind and a message that names the input and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }

    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }

    pub fn corrupt(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Corrupt, message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::TooLarge, message)
    }

    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    pub fn encode(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Encode, message)
    }

    pub fn io(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Io, message)
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn is_permanent(&self) -> bool {
        self.kind.is_permanent()
    }

    /// Prefixes the message with what was being processed (a key or a file name).
    pub fn context(self, what: impl fmt::Display) -> Self {
        Error {
            kind: self.kind,
            message: format!("{what}: {}", self.message),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.kind)
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;
