//! Prometheus metrics (text exposition format at `GET /metrics`): requests by route and status, request
//! latency, batch sizes and the queue's depth.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// A request's route and answer.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The matched route (`/v1/predict`), or `other`.
    pub route: String,
    /// HTTP status code.
    pub status: u16,
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    /// Requests answered, by route and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Seconds from a request's arrival to its answer.
    pub latency: Histogram,
    /// Images per engine batch.
    pub batch_size: Histogram,
    /// Images waiting for the engine.
    pub queue_depth: Gauge,
}

impl Metrics {
    /// Registers every metric, with batch-size buckets up to `max_batch`.
    pub fn new(max_batch: usize) -> Self {
        let mut registry = Registry::with_prefix("effnet");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let batch_size = Histogram::new(
            (0..)
                .map(|i| f64::from(1u32 << i))
                .take_while(|&b| b < 2.0 * max_batch as f64),
        );
        let queue_depth = Gauge::default();
        registry.register("http_requests", "Requests answered", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to its answer",
            latency.clone(),
        );
        registry.register("batch_size", "Images per engine batch", batch_size.clone());
        registry.register(
            "queue_depth",
            "Images waiting for the engine",
            queue_depth.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            batch_size,
            queue_depth,
        }
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_observations_appear_in_the_text() {
        let m = Metrics::new(16);
        m.requests
            .get_or_create(&RequestLabels {
                route: "/v1/predict".into(),
                status: 200,
            })
            .inc();
        m.batch_size.observe(3.0);
        m.queue_depth.set(2);
        let text = m.render();
        assert!(
            text.contains(r#"effnet_http_requests_total{route="/v1/predict",status="200"} 1"#),
            "{text}"
        );
        assert!(text.contains("effnet_batch_size_count 1"), "{text}");
        assert!(
            text.contains(r#"effnet_batch_size_bucket{le="16.0"} 1"#),
            "{text}"
        );
        assert!(text.contains("effnet_queue_depth 2"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
