//! Traces: one per message, with a child span per stage, continuing the trace context the
//! message carries. Uses the OpenTelemetry SDK's in-memory exporter behind the same
//! tracing-opentelemetry layer the daemon installs; a test binary of its own because the
//! subscriber is process-global (the pipeline's spans are made on blocking threads).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use resizeq::adapters::memory::{MemoryQueue, MemoryStore};
use resizeq::config::Config;
use resizeq::event::s3_notification;
use resizeq::worker::{run, Mode, WorkerContext};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

const UPLOAD_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const UPLOAD_SPAN: &str = "00f067aa0ba902b7";
const XRAY_TRACE: &str = "5759e988bd862e3fe1be46a994272793";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn each_message_is_one_trace_continuing_the_uploaders() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
        .init();

    let mut config = Config::default();
    config.queue.wait_time_secs = 1;
    let ctx = Arc::new(
        WorkerContext::new(
            &config,
            MemoryQueue::new(Duration::from_secs(30), true),
            MemoryStore::new(),
        )
        .unwrap(),
    );
    let mut sent = Vec::new();
    for (key, attributes) in [
        (
            "w3c.jpg",
            [("traceparent", format!("00-{UPLOAD_TRACE}-{UPLOAD_SPAN}-01"))],
        ),
        (
            "xray.jpg",
            [(
                "AWSTraceHeader",
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
                    .to_string(),
            )],
        ),
        ("plain.jpg", [("unrelated", "x".to_string())]),
    ] {
        let etag = ctx.store().insert("photos", key, fixture("tiny.jpg"));
        let attributes: HashMap<String, String> = attributes
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        sent.push(ctx.queue.send_with_attributes(
            s3_notification("photos", key, Some(&etag), None),
            attributes,
        ));
    }
    run(
        ctx.clone(),
        Mode::UntilEmpty,
        Duration::from_secs(25),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();

    let messages: Vec<_> = spans.iter().filter(|s| s.name == "message").collect();
    assert_eq!(messages.len(), 3, "one message span each: {messages:#?}");
    let trace_ids: std::collections::HashSet<_> =
        messages.iter().map(|s| s.span_context.trace_id()).collect();
    assert_eq!(trace_ids.len(), 3, "a trace per message");

    let by_trace = |trace: TraceId| -> Vec<&str> {
        let mut names: Vec<&str> = spans
            .iter()
            .filter(|s| s.span_context.trace_id() == trace)
            .map(|s| s.name.as_ref())
            .collect();
        names.sort();
        names.dedup();
        names
    };

    let w3c = TraceId::from_hex(UPLOAD_TRACE).unwrap();
    let continued = messages
        .iter()
        .find(|s| s.span_context.trace_id() == w3c)
        .expect("the traceparent's trace is continued");
    assert_eq!(
        continued.parent_span_id,
        SpanId::from_hex(UPLOAD_SPAN).unwrap()
    );
    for stage in [
        "decode", "encode", "get", "head", "message", "put", "resize",
    ] {
        assert!(
            by_trace(w3c).contains(&stage),
            "{stage} span missing from the message's trace: {:?}",
            by_trace(w3c)
        );
    }
    // Stage spans hang under the message (through its record span), not beside it.
    let in_trace = |name: &str| {
        spans
            .iter()
            .find(|s| s.span_context.trace_id() == w3c && s.name == name)
            .unwrap_or_else(|| panic!("no {name} span"))
    };
    let record = in_trace("record");
    assert_eq!(record.parent_span_id, continued.span_context.span_id());
    for stage in ["get", "put", "decode"] {
        assert_eq!(
            in_trace(stage).parent_span_id,
            record.span_context.span_id(),
            "{stage}"
        );
    }

    let xray = TraceId::from_hex(XRAY_TRACE).unwrap();
    assert!(
        messages.iter().any(|s| s.span_context.trace_id() == xray
            && s.parent_span_id == SpanId::from_hex("53995c3f42cd8ad8").unwrap()),
        "the AWSTraceHeader's trace is continued"
    );
    let fresh = messages
        .iter()
        .find(|s| s.span_context.trace_id() != w3c && s.span_context.trace_id() != xray)
        .unwrap();
    assert_eq!(fresh.parent_span_id, SpanId::INVALID, "a new root trace");
    assert_eq!(ctx.queue.acked().len(), 3, "{sent:?}");
}
