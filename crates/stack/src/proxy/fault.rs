//! Fault injection (Envoy's fault filter): a route's `fault` policy answers a
//! share of its requests itself (`abort`) or holds a share before they go
//! upstream (`delay`), so that a caller's retries, timeouts and fallbacks
//! can be tried against a failing or slow service without touching it.
//!
//! The policy wraps the route's forwarding step and nothing else: an
//! aborted request never reaches the cluster (no endpoint load, no outlier
//! feedback, no retry), and a delay counts against the route timeout and the
//! caller's deadline exactly as a slow upstream would. Both are counted in
//! `switchyard_faults_injected_total{listener,route,kind}`, and an aborted
//! answer carries `x-switchyard-fault: abort` so it is never mistaken for
//! the service's own.

use std::{future::Future, time::Duration};

use http::{HeaderValue, Response, StatusCode};
use switchyard_config::FaultPolicy;
use switchyard_telemetry::metrics::FaultCounters;

use crate::body::Body;

/// The header marking an answer the proxy injected.
pub const FAULT_HEADER: &str = "x-switchyard-fault";

/// A route's fault policy with its counters.
#[derive(Debug)]
pub struct Faults {
    policy: FaultPolicy,
    counters: FaultCounters,
}

/// What the policy decided for one request.
#[derive(Debug, PartialEq)]
enum Decision {
    Pass,
    Delay(Duration),
    Abort,
}

impl Faults {
    pub fn new(policy: FaultPolicy, counters: FaultCounters) -> Self {
        Self { policy, counters }
    }

    /// Draws this request's faults: an abort first (an aborted request is
    /// not also delayed), then a delay.
    fn decide(&self, mut draw: impl FnMut() -> f64) -> Decision {
        if let Some(a) = &self.policy.abort {
            if draw() < a.ratio {
                return Decision::Abort;
            }
        }
        match &self.policy.delay {
            Some(d) if draw() < d.ratio => Decision::Delay(d.duration),
            _ => Decision::Pass,
        }
    }

    /// Runs `forward` under the policy: an aborted request is answered
    /// here, as if by the upstream, and `forward` is dropped unpolled.
    pub async fn around<F, E>(&self, grpc: bool, forward: F) -> Result<Response<Body>, E>
    where
        F: Future<Output = Result<Response<Body>, E>>,
    {
        match self.decide(fastrand::f64) {
            Decision::Abort => {
                self.counters.abort.inc();
                Ok(self.abort_response(grpc))
            }
            Decision::Delay(d) => {
                self.counters.delay.inc();
                tokio::time::sleep(d).await;
                forward.await
            }
            Decision::Pass => forward.await,
        }
    }

    fn abort_response(&self, grpc: bool) -> Response<Body> {
        let abort = self
            .policy
            .abort
            .as_ref()
            .expect("an abort is only drawn from an abort policy");
        let mut resp = if grpc {
            // Trailers-only, as a gRPC server would fail the call.
            let mut r = Response::new(Body::empty());
            let h = r.headers_mut();
            h.insert("content-type", HeaderValue::from_static("application/grpc"));
            h.insert(
                "grpc-status",
                HeaderValue::from(u16::from(abort.grpc_status)),
            );
            h.insert("grpc-message", HeaderValue::from_static("fault injected"));
            r
        } else {
            let mut r = Response::new(Body::full("fault injected\n"));
            *r.status_mut() =
                StatusCode::from_u16(abort.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            r.headers_mut().insert(
                "content-type",
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            r
        };
        resp.headers_mut()
            .insert(FAULT_HEADER, HeaderValue::from_static("abort"));
        resp
    }
}

#[cfg(test)]
mod tests {
    use switchyard_config::{FaultAbort, FaultDelay};
    use switchyard_telemetry::Metrics;
    use tokio::time::Instant;

    use super::*;

    fn faults(abort: Option<f64>, delay: Option<(f64, u64)>) -> (Faults, FaultCounters) {
        let counters = Metrics::new().route_faults("l", "r");
        let policy = FaultPolicy {
            abort: abort.map(|ratio| FaultAbort {
                ratio,
                status: 503,
                grpc_status: 14,
            }),
            delay: delay.map(|(ratio, ms)| FaultDelay {
                ratio,
                duration: Duration::from_millis(ms),
            }),
        };
        (Faults::new(policy, counters.clone()), counters)
    }

    #[test]
    fn ratios_decide_and_an_abort_is_not_also_delayed() {
        let (f, _) = faults(Some(0.25), Some((0.5, 100)));
        let mut draws = [0.1, 0.3, 0.4, 0.3, 0.9].into_iter();
        let mut next = || draws.next().unwrap();
        assert_eq!(f.decide(&mut next), Decision::Abort);
        assert_eq!(
            f.decide(&mut next),
            Decision::Delay(Duration::from_millis(100))
        );
        assert_eq!(f.decide(&mut next), Decision::Pass);
        let (none, _) = faults(None, None);
        assert_eq!(none.decide(|| 0.0), Decision::Pass);
    }

    #[test]
    fn about_the_configured_share_is_aborted() {
        let (f, _) = faults(Some(0.2), None);
        let aborted = (0..10_000)
            .filter(|_| f.decide(fastrand::f64) == Decision::Abort)
            .count();
        assert!((1_700..2_300).contains(&aborted), "{aborted}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_delay_holds_the_request_then_forwards_it() {
        let (f, counters) = faults(None, Some((1.0, 250)));
        let started = Instant::now();
        let resp = f
            .around(false, async { Ok::<_, ()>(Response::new(Body::empty())) })
            .await
            .unwrap();
        assert_eq!(started.elapsed(), Duration::from_millis(250));
        assert!(!resp.headers().contains_key(FAULT_HEADER));
        assert_eq!(counters.delay.get(), 1);
        assert_eq!(counters.abort.get(), 0);
    }

    async fn never_forwarded() -> Result<Response<Body>, ()> {
        panic!("an aborted request is not forwarded")
    }

    #[tokio::test(start_paused = true)]
    async fn an_abort_answers_without_forwarding() {
        let (f, counters) = faults(Some(1.0), None);
        let resp = f.around(false, never_forwarded()).await.unwrap();
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()[FAULT_HEADER], "abort");
        let grpc = f.around(true, never_forwarded()).await.unwrap();
        assert_eq!(grpc.status(), 200);
        assert_eq!(grpc.headers()["grpc-status"], "14");
        assert_eq!(counters.abort.get(), 2);
    }
}
