//! Distributed tracing: one span per request and one per attempt, exported
//! over OTLP (gRPC or HTTP/protobuf) to any OpenTelemetry collector.
//!
//! Spans are built as `SpanData` when they end and handed to a bounded
//! queue; a background task batches them to the exporter. When the
//! collector is slow or down the queue fills and further spans are dropped
//! and counted: the data path never waits for telemetry. Sampling is
//! parent-based: a caller's decision is honoured, and new traces are
//! sampled by trace id at `sample_ratio`, so every hop of a trace agrees.
//!
//! # Layout
//! - [`propagation`]: W3C Trace Context and B3 extraction and injection.
//! - this module: [`Tracer`], per-request [`RequestTrace`], export loop.

pub mod propagation;

use std::{
    borrow::Cow,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use http::{HeaderMap, HeaderValue};
use opentelemetry::{
    InstrumentationScope,
    trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState},
};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::{
    Resource,
    trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks},
};
use switchyard_config::{OtlpProtocol, TracingConfig};
use tokio::sync::mpsc;

pub use opentelemetry::KeyValue;
pub use propagation::Format;

use crate::metrics::SpanMetrics;

/// How long a partial batch waits for more spans before it is sent.
const SCHEDULE_DELAY: Duration = Duration::from_secs(1);
/// Upper bound of one export call, so a hung collector cannot stall the
/// export task forever.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
#[error("cannot set up the OTLP exporter for {endpoint}: {reason}")]
pub struct TraceError {
    endpoint: String,
    reason: String,
}

/// Counters of the span pipeline, for metrics.
#[derive(Debug, Default)]
pub struct TraceStats {
    pub recorded: AtomicU64,
    pub dropped: AtomicU64,
    pub exported: AtomicU64,
    pub export_failures: AtomicU64,
}

/// Creates spans and queues them for export.
#[derive(Debug)]
pub struct Tracer {
    tx: mpsc::Sender<SpanData>,
    /// Trace ids whose low 64 bits are below this are sampled.
    threshold: u64,
    scope: InstrumentationScope,
    stats: Arc<TraceStats>,
    metrics: Option<SpanMetrics>,
}

/// The trace context of one request through this hop.
#[derive(Clone, Debug)]
pub struct RequestTrace {
    pub trace_id: u128,
    /// This hop's server span.
    pub span_id: u64,
    /// The caller's span, when the request carried a context.
    pub parent: Option<u64>,
    pub sampled: bool,
    pub tracestate: Option<HeaderValue>,
    pub format: Format,
    start: SystemTime,
}

/// One attempt's client span.
#[derive(Clone, Copy, Debug)]
pub struct AttemptSpan {
    pub span_id: u64,
    start: SystemTime,
}

fn random_nonzero_u64() -> u64 {
    loop {
        let v = fastrand::u64(..);
        if v != 0 {
            return v;
        }
    }
}

impl Tracer {
    /// Builds the exporter and starts the export task; must run inside a
    /// tokio runtime.
    pub fn start(
        cfg: &TracingConfig,
        metrics: Option<SpanMetrics>,
    ) -> Result<Arc<Self>, TraceError> {
        let err = |reason: String| TraceError {
            endpoint: cfg.otlp_endpoint.clone(),
            reason,
        };
        let mut exporter = match cfg.protocol {
            OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(cfg.otlp_endpoint.clone())
                .with_timeout(EXPORT_TIMEOUT)
                .build(),
            OtlpProtocol::Http => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(
                    opentelemetry_http::hyper::HyperClient::with_default_connector(
                        EXPORT_TIMEOUT,
                        None,
                    ),
                )
                .with_endpoint(cfg.otlp_endpoint.clone())
                .with_timeout(EXPORT_TIMEOUT)
                .build(),
        }
        .map_err(|e| err(e.to_string()))?;
        exporter.set_resource(
            &Resource::builder()
                .with_service_name(cfg.service_name.clone())
                .build(),
        );
        let (tx, rx) = mpsc::channel(cfg.queue_size.max(1));
        let stats = Arc::new(TraceStats::default());
        tokio::spawn(export_loop(
            rx,
            exporter,
            cfg.batch_size.max(1),
            stats.clone(),
            metrics.clone(),
        ));
        let threshold = (cfg.sample_ratio.clamp(0.0, 1.0) * u64::MAX as f64) as u64;
        Ok(Arc::new(Self {
            tx,
            threshold,
            scope: InstrumentationScope::builder("switchyard")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            stats,
            metrics,
        }))
    }

    pub fn stats(&self) -> &Arc<TraceStats> {
        &self.stats
    }

    /// Starts the server span of a request: continues the caller's trace
    /// when the headers carry one, or starts a new one.
    pub fn begin(&self, headers: &HeaderMap) -> RequestTrace {
        let parent = propagation::extract(headers);
        let (trace_id, parent_span, decision, tracestate, format) = match parent {
            Some(p) => (
                p.trace_id,
                Some(p.span_id),
                p.sampled,
                p.tracestate,
                p.format,
            ),
            None => (
                u128::from(random_nonzero_u64()) << 64 | u128::from(fastrand::u64(..)),
                None,
                None,
                None,
                Format::W3c,
            ),
        };
        // Trace-id ratio sampling: every hop decides alike for a trace.
        let sampled =
            decision.unwrap_or((trace_id as u64) < self.threshold || self.threshold == u64::MAX);
        RequestTrace {
            trace_id,
            span_id: random_nonzero_u64(),
            parent: parent_span,
            sampled,
            tracestate,
            format,
            start: SystemTime::now(),
        }
    }

    /// Starts an attempt span and writes its context into the upstream
    /// request's headers.
    pub fn attempt(&self, t: &RequestTrace, headers: &mut HeaderMap) -> AttemptSpan {
        let span = AttemptSpan {
            span_id: random_nonzero_u64(),
            start: SystemTime::now(),
        };
        propagation::inject(
            headers,
            t.trace_id,
            span.span_id,
            t.span_id,
            t.sampled,
            t.tracestate.as_ref(),
            t.format,
        );
        span
    }

    /// Ends the server span.
    pub fn end_request(
        &self,
        t: &RequestTrace,
        name: String,
        attributes: Vec<KeyValue>,
        error: Option<&'static str>,
    ) {
        self.end_own(t, SpanKind::Server, name, attributes, error);
    }

    /// Ends the span of a call the library's client made: the logical
    /// operation (kind internal) whose children are its attempts, as the
    /// server span is for a proxied request.
    pub fn end_call(
        &self,
        t: &RequestTrace,
        name: String,
        attributes: Vec<KeyValue>,
        error: Option<&'static str>,
    ) {
        self.end_own(t, SpanKind::Internal, name, attributes, error);
    }

    /// Ends the span `t` stands for (a child of the caller's, if any).
    fn end_own(
        &self,
        t: &RequestTrace,
        kind: SpanKind,
        name: String,
        attributes: Vec<KeyValue>,
        error: Option<&'static str>,
    ) {
        if !t.sampled {
            return;
        }
        let span = self.span_data(
            t,
            t.span_id,
            t.parent.unwrap_or(0),
            t.parent.is_some(),
            kind,
            name,
            t.start,
            attributes,
            error,
        );
        self.record(span);
    }

    /// Ends an attempt span.
    pub fn end_attempt(
        &self,
        t: &RequestTrace,
        a: AttemptSpan,
        name: String,
        attributes: Vec<KeyValue>,
        error: Option<&'static str>,
    ) {
        if !t.sampled {
            return;
        }
        let span = self.span_data(
            t,
            a.span_id,
            t.span_id,
            false,
            SpanKind::Client,
            name,
            a.start,
            attributes,
            error,
        );
        self.record(span);
    }

    #[allow(clippy::too_many_arguments)]
    fn span_data(
        &self,
        t: &RequestTrace,
        span_id: u64,
        parent: u64,
        parent_remote: bool,
        kind: SpanKind,
        name: String,
        start: SystemTime,
        mut attributes: Vec<KeyValue>,
        error: Option<&'static str>,
    ) -> SpanData {
        let status = match error {
            Some(e) => {
                attributes.push(KeyValue::new("error.type", e));
                Status::error(e)
            }
            None => Status::Unset,
        };
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(t.trace_id),
                SpanId::from(span_id),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::from(parent),
            parent_span_is_remote: parent_remote,
            span_kind: kind,
            name: Cow::Owned(name),
            start_time: start,
            end_time: SystemTime::now(),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: self.scope.clone(),
        }
    }

    fn record(&self, span: SpanData) {
        self.stats.recorded.fetch_add(1, Ordering::Relaxed);
        if self.tx.try_send(span).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            if let Some(m) = &self.metrics {
                m.dropped(1);
            }
        }
    }
}

async fn export_loop(
    mut rx: mpsc::Receiver<SpanData>,
    exporter: opentelemetry_otlp::SpanExporter,
    batch_size: usize,
    stats: Arc<TraceStats>,
    metrics: Option<SpanMetrics>,
) {
    let mut batch = Vec::with_capacity(batch_size);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        let deadline = tokio::time::Instant::now() + SCHEDULE_DELAY;
        while batch.len() < batch_size {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(span)) => batch.push(span),
                Ok(None) | Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        let spans = std::mem::replace(&mut batch, Vec::with_capacity(batch_size));
        match tokio::time::timeout(EXPORT_TIMEOUT, exporter.export(spans)).await {
            Ok(Ok(())) => {
                stats.exported.fetch_add(n, Ordering::Relaxed);
                if let Some(m) = &metrics {
                    m.exported(n);
                }
            }
            Ok(Err(e)) => {
                stats.export_failures.fetch_add(n, Ordering::Relaxed);
                if let Some(m) = &metrics {
                    m.dropped(n);
                }
                tracing::debug!(error = %e, spans = n, "span export failed");
            }
            Err(_) => {
                stats.export_failures.fetch_add(n, Ordering::Relaxed);
                if let Some(m) = &metrics {
                    m.dropped(n);
                }
                tracing::debug!(spans = n, "span export timed out");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracer(ratio: f64, queue: usize) -> Arc<Tracer> {
        Tracer::start(
            &TracingConfig {
                // Nothing listens here: exports fail, which these tests ignore.
                otlp_endpoint: "http://127.0.0.1:9".into(),
                sample_ratio: ratio,
                queue_size: queue,
                ..TracingConfig::default()
            },
            None,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn continues_a_callers_trace_and_injects_a_child() {
        let t = tracer(0.0, 16);
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let rt = t.begin(&h);
        assert_eq!(rt.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(rt.parent, Some(0x00f067aa0ba902b7));
        assert!(rt.sampled, "the parent's decision wins over the ratio");
        let mut up = HeaderMap::new();
        let a = t.attempt(&rt, &mut up);
        let tp = up["traceparent"].to_str().unwrap();
        assert!(
            tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{tp}"
        );
        assert!(tp.ends_with(&format!("{:016x}-01", a.span_id)), "{tp}");
    }

    #[tokio::test]
    async fn ratio_sampling_of_new_traces() {
        let none = tracer(0.0, 16);
        let all = tracer(1.0, 16);
        let h = HeaderMap::new();
        assert!((0..100).all(|_| !none.begin(&h).sampled));
        assert!((0..100).all(|_| all.begin(&h).sampled));
        let some = tracer(0.25, 16);
        let n = (0..4000).filter(|_| some.begin(&h).sampled).count();
        assert!((800..1200).contains(&n), "{n}");
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_without_blocking() {
        let t = tracer(1.0, 4);
        let h = HeaderMap::new();
        for _ in 0..1000 {
            let rt = t.begin(&h);
            t.end_request(&rt, "GET /".into(), Vec::new(), None);
        }
        let s = t.stats();
        assert_eq!(s.recorded.load(Ordering::Relaxed), 1000);
        assert!(s.dropped.load(Ordering::Relaxed) >= 990, "{s:?}");
    }
}
