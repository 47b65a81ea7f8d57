//! Traces: OpenTelemetry spans exported over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is
//! set (`OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf`, the default, or `http/json`), and the
//! W3C `traceparent` that carries a trace from one process to the next: in HTTP headers, in the
//! edge's log, in NATS message headers. One trace runs from a staff member's request through the
//! edge's commit and the JetStream publish to each projector's apply.
//!
//! Without the variable nothing is exported and every function here is a cheap no-op, so the
//! hot paths pay nothing for tracing they do not use.

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::Subscriber;
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt as _};
use tracing_subscriber::registry::LookupSpan;

/// The tracing layer that hands spans to the exporter.
pub type TraceLayer<S> = OpenTelemetryLayer<S, SdkTracer>;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported in this process.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The exporter of a process: flushes what is buffered and stops when dropped.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("traces: the last spans were not exported: {e}");
        }
    }
}

/// The layer that exports this process's spans as `service`, when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set; `None` otherwise. Keep the [`Telemetry`] until exit.
pub fn otlp_layer<S>(service: &str) -> Result<Option<(TraceLayer<S>, Telemetry)>, String>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").unwrap_or_default();
    if endpoint.trim().is_empty() {
        return Ok(None);
    }
    let protocol = match std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref() {
        Err(_) | Ok("") | Ok("http/protobuf") => Protocol::HttpBinary,
        Ok("http/json") => Protocol::HttpJson,
        Ok(other) => {
            return Err(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL is {other:?}: hms exports http/protobuf or http/json"
            ));
        }
    };
    // The endpoint is read from the environment by the exporter, which appends /v1/traces.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        .build()
        .map_err(|e| format!("the OTLP exporter for {endpoint}: {e}"))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service.to_owned())
                .build(),
        )
        .build();
    let tracer = provider.tracer("hms");
    ENABLED.store(true, Ordering::Relaxed);
    Ok(Some((
        tracing_opentelemetry::layer().with_tracer(tracer),
        Telemetry { provider },
    )))
}

/// The W3C `traceparent` of `span`, for the next process to continue its trace; `None` when
/// nothing is exported.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    if !enabled() {
        return None;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| {
        format!(
            "00-{:032x}-{:016x}-{:02x}",
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags().to_u8()
        )
    })
}

/// Makes `span` the child of the remote span a `traceparent` names (an HTTP caller's, or the
/// span that published a NATS message). An unreadable `traceparent` is ignored.
pub fn continue_trace(span: &tracing::Span, traceparent: &str) {
    if !enabled() {
        return;
    }
    if let Some(parent) = parse_traceparent(traceparent) {
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(parent));
    }
}

/// The span of one `POST /v1/commands` (at an edge or the command service), continuing the
/// caller's trace; the handler records the command's type in its `command` field.
pub fn command_request_span(headers: &axum::http::HeaderMap) -> tracing::Span {
    let span = tracing::info_span!(
        "POST /v1/commands",
        otel.kind = "server",
        command = tracing::field::Empty
    );
    continue_from_headers(&span, headers);
    span
}

/// Continues, in `span` (a server's span of one request), the trace of the caller's
/// `traceparent` header, if it sent one.
pub fn continue_from_headers(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    if let Some(traceparent) = crate::http::traceparent(headers) {
        continue_trace(span, &traceparent);
    }
}

/// The `traceparent` a command's events carry on: the span of its commit when traces are
/// exported (so the publish and the projectors' apply continue it), the caller's as sent
/// otherwise.
pub fn command_traceparent(
    commit: &tracing::Span,
    headers: &axum::http::HeaderMap,
) -> Option<String> {
    traceparent_of(commit).or_else(|| crate::http::traceparent(headers))
}

/// A W3C `traceparent` (version 00) as a remote span context.
pub fn parse_traceparent(value: &str) -> Option<SpanContext> {
    let mut parts = value.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00"
        || parts.next().is_some()
        || trace.len() != 32
        || span.len() != 16
        || flags.len() != 2
    {
        return None;
    }
    let context = SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(span).ok()?,
        TraceFlags::new(u8::from_str_radix(flags, 16).ok()?),
        true,
        TraceState::default(),
    );
    context.is_valid().then_some(context)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_is_read_as_the_span_it_names() {
        let read =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(
            format!("{:032x}", read.trace_id()),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(format!("{:016x}", read.span_id()), "00f067aa0ba902b7");
        assert!(read.is_sampled());
        assert!(read.is_remote());
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn without_an_exporter_nothing_is_made_or_continued() {
        let span = tracing::info_span!("unexported");
        continue_trace(
            &span,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
        assert_eq!(traceparent_of(&span), None);
    }
}
