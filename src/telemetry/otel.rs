//! Logs and traces: one `tracing` subscriber with a log layer (JSON off a terminal) and, when
//! an OTLP endpoint is configured, an OpenTelemetry layer exporting spans over OTLP/HTTP.
//!
//! Configured by the standard variables only (`OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`...),
//! so a collector sidecar or the OpenTelemetry operator's injection works unchanged.

use std::collections::HashMap;
use std::io::IsTerminal;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::ports::{Message, AWS_TRACE_HEADER};

/// The message attribute carrying a W3C trace context (the X-Ray one: [`AWS_TRACE_HEADER`]).
pub const TRACEPARENT: &str = "traceparent";

/// Flushes and stops the trace exporter when dropped (at the very end of `main`).
#[must_use = "dropping it stops the trace exporter"]
pub struct TracingGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TracingGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs the global subscriber. `RESIZEQ_LOG` (or `RUST_LOG`) sets the filter; default
/// `info`. Never fails: a broken OTLP setting is reported and traces stay off.
pub fn init(service: &'static str) -> TracingGuard {
    let filter = std::env::var("RESIZEQ_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = if std::io::stderr().is_terminal() {
        logs.boxed()
    } else {
        logs.json()
            .with_current_span(true)
            .with_span_list(false)
            .boxed()
    };
    let (provider, problem) = match otlp_provider(service) {
        Ok(provider) => (provider, None),
        Err(e) => (None, Some(e)),
    };
    let traces = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(service))
            .boxed()
    });
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .with(filter)
        .init();
    match (&provider, problem) {
        (Some(_), _) => tracing::info!("OpenTelemetry traces exported over OTLP/HTTP"),
        (None, Some(e)) => {
            tracing::warn!(error = %e, "OpenTelemetry traces off: exporter setup failed")
        }
        (None, None) => {}
    }
    TracingGuard { provider }
}

fn otlp_provider(service: &'static str) -> Result<Option<SdkTracerProvider>, String> {
    let configured = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|var| std::env::var(var).is_ok_and(|v| !v.is_empty()));
    if !configured {
        return Ok(None);
    }
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build()
        .map_err(|e| e.to_string())?;
    let mut resource = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name(service);
    }
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build(),
    ))
}

/// The trace a message continues: its W3C `traceparent` message attribute, else its X-Ray
/// `AWSTraceHeader`. An empty context (a new trace) when it has neither or they are malformed.
pub fn remote_context(message: &Message) -> opentelemetry::Context {
    let mut carrier: HashMap<String, String> = HashMap::new();
    if let Some(traceparent) = message.attributes.get(TRACEPARENT) {
        carrier.insert(TRACEPARENT.into(), traceparent.clone());
        if let Some(state) = message.attributes.get("tracestate") {
            carrier.insert("tracestate".into(), state.clone());
        }
    } else if let Some(xray) = message.attributes.get(AWS_TRACE_HEADER) {
        if let Some(traceparent) = xray_to_traceparent(xray) {
            carrier.insert(TRACEPARENT.into(), traceparent);
        }
    }
    TraceContextPropagator::new().extract(&carrier)
}

/// `Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1` →
/// `00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01`. X-Ray trace ids are W3C ids
/// with the version and dashes removed.
pub fn xray_to_traceparent(header: &str) -> Option<String> {
    let (mut root, mut parent, mut sampled) = (None, None, "00");
    for part in header.split(';') {
        match part.trim().split_once('=') {
            Some(("Root", v)) => root = Some(v),
            Some(("Parent", v)) => parent = Some(v),
            Some(("Sampled", "1")) => sampled = "01",
            _ => {}
        }
    }
    let mut fields = root?.split('-');
    let (version, time, id) = (fields.next()?, fields.next()?, fields.next()?);
    let trace_id = format!("{time}{id}");
    let parent = parent?;
    let hex = |s: &str, len| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    (version == "1" && hex(&trace_id, 32) && hex(parent, 16)).then(|| {
        format!(
            "00-{}-{}-{sampled}",
            trace_id.to_lowercase(),
            parent.to_lowercase()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceContextExt;

    #[test]
    fn xray_headers_become_traceparents() {
        assert_eq!(
            xray_to_traceparent(
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
            )
            .as_deref(),
            Some("00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01")
        );
        assert_eq!(
            xray_to_traceparent("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8")
                .as_deref(),
            Some("00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-00")
        );
        assert_eq!(xray_to_traceparent("Root=1-abc;Parent=1"), None);
        assert_eq!(xray_to_traceparent("Sampled=1"), None);
    }

    #[test]
    fn a_message_continues_its_traceparent_else_its_xray_header() {
        let mut message = Message {
            id: "m".into(),
            receipt: "r".into(),
            body: "{}".into(),
            receive_count: 1,
            sent_at: None,
            attributes: HashMap::new(),
        };
        assert!(!remote_context(&message).span().span_context().is_valid());
        message.attributes.insert(
            AWS_TRACE_HEADER.into(),
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1".into(),
        );
        let cx = remote_context(&message);
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "5759e988bd862e3fe1be46a994272793"
        );
        message.attributes.insert(
            TRACEPARENT.into(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        );
        let cx = remote_context(&message);
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert!(cx.span().span_context().is_remote());
    }
}
