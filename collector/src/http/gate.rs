//! How many queries run at once, and what happens to a query whose client
//! has gone. Every PromQL and LogQL query of the HTTP APIs passes through
//! the [`QueryGate`]: at most `max_concurrency` evaluate at once (like
//! Prometheus' `--query.max-concurrency`); the others wait for a slot for at
//! most their timeout, then fail with a timeout. A query runs on a blocking
//! thread with a [`Cancel`] flag that is raised when the request's future is
//! dropped — which is what the HTTP server does when the client disconnects —
//! so the evaluator stops at its next check instead of running to its
//! deadline for nobody.
//!
//! Not here: the limits inside one query (samples, points, depth), which the
//! engines enforce.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;

use crate::config::QueryLimits;

/// Raised when nobody waits for the query's answer any more.
pub type Cancel = Arc<AtomicBool>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `promql` or `logql`.
    pub language: &'static str,
    /// `ok`, `error`, `timeout`, `canceled`, `queue_timeout`.
    pub outcome: &'static str,
}

/// Why a gated query did not produce its own result.
#[derive(Debug, PartialEq, Eq)]
pub enum GateError {
    /// No slot freed up within the query's timeout.
    QueueTimeout(Duration),
    /// The query's thread failed.
    Panicked(String),
}

/// The concurrency limit and its metrics.
pub struct QueryGate {
    slots: Semaphore,
    limits: QueryLimits,
    running: Gauge,
    queued: Gauge,
    done: Family<OutcomeLabels, Counter>,
}

impl QueryGate {
    pub fn new(limits: QueryLimits) -> Arc<Self> {
        Arc::new(QueryGate {
            slots: Semaphore::new(limits.max_concurrency.max(1)),
            limits,
            running: Gauge::default(),
            queued: Gauge::default(),
            done: Family::default(),
        })
    }

    pub fn limits(&self) -> &QueryLimits {
        &self.limits
    }

    pub fn register(&self, r: &mut Registry) {
        let limit: Gauge = Gauge::default();
        limit.set(self.limits.max_concurrency as i64);
        r.register(
            "vigil_collector_query_concurrency_limit",
            "Most queries evaluated at once",
            limit,
        );
        r.register(
            "vigil_collector_queries_running",
            "Queries being evaluated",
            self.running.clone(),
        );
        r.register(
            "vigil_collector_queries_queued",
            "Queries waiting for a slot",
            self.queued.clone(),
        );
        r.register(
            "vigil_collector_queries",
            "Queries answered, by language and outcome",
            self.done.clone(),
        );
    }

    /// Counts how a query ended.
    fn outcome(&self, language: &'static str, outcome: &'static str) {
        self.done
            .get_or_create(&OutcomeLabels { language, outcome })
            .inc();
    }

    /// Waits (at most `timeout`) for a slot, then runs `f` on a blocking
    /// thread. If the returned future is dropped, the flag `f` received is
    /// raised; the slot is held until `f` returns. `classify` names the
    /// outcome of `f`'s result for `vigil_collector_queries_total` (counted
    /// on the query's thread, so a query whose client left is counted too).
    pub async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        language: &'static str,
        timeout: Duration,
        f: impl FnOnce(Cancel) -> T + Send + 'static,
        classify: fn(&T) -> &'static str,
    ) -> Result<T, GateError> {
        let started = Instant::now();
        self.queued.inc();
        let permit = tokio::time::timeout(timeout, self.slots.acquire()).await;
        self.queued.dec();
        let permit = match permit {
            Ok(Ok(p)) => p,
            // the semaphore is never closed; treat it as a full queue
            Ok(Err(_)) | Err(_) => {
                self.outcome(language, "queue_timeout");
                return Err(GateError::QueueTimeout(timeout));
            }
        };
        // the permit's lifetime ties to `self`; move a count into the task
        permit.forget();
        let cancel: Cancel = Arc::new(AtomicBool::new(false));
        let guard = RaiseOnDrop(Some(cancel.clone()));
        let gate = self.clone();
        self.running.inc();
        let waited = started.elapsed();
        tracing::trace!(?waited, "query slot acquired");
        let r = tokio::task::spawn_blocking(move || {
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(cancel)));
            gate.outcome(
                language,
                match &out {
                    Ok(v) => classify(v),
                    Err(_) => "error",
                },
            );
            gate.running.dec();
            gate.slots.add_permits(1);
            out
        })
        .await;
        guard.disarm();
        match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(p)) => Err(GateError::Panicked(panic_text(&p))),
            Err(e) => Err(GateError::Panicked(e.to_string())),
        }
    }
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "query evaluation failed".into())
}

/// Raises its flag when dropped, unless disarmed first.
struct RaiseOnDrop(Option<Cancel>);

impl RaiseOnDrop {
    /// Drops the guard without raising the flag (and without leaking its
    /// reference: `mem::forget` here cost every query 24 bytes, found by the
    /// `promql_http` fuzz target's leak check).
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for RaiseOnDrop {
    fn drop(&mut self) {
        if let Some(c) = &self.0 {
            c.store(true, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(n: usize) -> Arc<QueryGate> {
        QueryGate::new(QueryLimits {
            max_concurrency: n,
            timeout: Duration::from_secs(5),
            max_samples: 1000,
        })
    }

    #[tokio::test]
    async fn at_most_n_run_and_the_rest_wait_or_time_out() {
        let g = gate(1);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let g1 = g.clone();
        let first = tokio::spawn(async move {
            g1.run(
                "promql",
                Duration::from_secs(5),
                move |_| rx.recv().is_ok(),
                |_| "ok",
            )
            .await
        });
        while g.running.get() == 0 {
            tokio::task::yield_now().await;
        }
        // the only slot is taken: a second query waits, then gives up
        let second = g
            .run("promql", Duration::from_millis(50), |_| true, |_| "ok")
            .await;
        assert_eq!(
            second,
            Err(GateError::QueueTimeout(Duration::from_millis(50)))
        );
        tx.send(()).unwrap();
        assert_eq!(first.await.unwrap(), Ok(true));
        // the slot is back
        assert_eq!(
            g.run("promql", Duration::from_millis(50), |_| 7, |_| "ok")
                .await,
            Ok(7)
        );
    }

    #[tokio::test]
    async fn a_dropped_request_cancels_its_query_and_frees_the_slot() {
        let g = gate(1);
        let (seen_tx, seen_rx) = std::sync::mpsc::channel::<bool>();
        let g1 = g.clone();
        let fut = tokio::spawn(async move {
            g1.run(
                "promql",
                Duration::from_secs(5),
                move |cancel| {
                    // a query that runs until it is canceled
                    while !cancel.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    let _ = seen_tx.send(true);
                },
                |_| "canceled",
            )
            .await
        });
        while g.running.get() == 0 {
            tokio::task::yield_now().await;
        }
        fut.abort();
        let seen =
            tokio::task::spawn_blocking(move || seen_rx.recv_timeout(Duration::from_secs(10)))
                .await
                .unwrap();
        assert_eq!(seen, Ok(true));
        assert_eq!(
            g.run("promql", Duration::from_secs(5), |_| 1, |_| "ok")
                .await,
            Ok(1)
        );
        let canceled = g
            .done
            .get_or_create(&OutcomeLabels {
                language: "promql",
                outcome: "canceled",
            })
            .get();
        assert_eq!(canceled, 1);
    }

    /// Found by the `promql_http` fuzz target (LeakSanitizer): the finished
    /// query's cancellation flag was leaked, 24 bytes per query.
    #[tokio::test]
    async fn a_finished_query_leaves_no_reference_to_its_flag() {
        let g = gate(1);
        let kept: Arc<parking_lot::Mutex<Option<Cancel>>> = Arc::default();
        let k = kept.clone();
        let r = g
            .run(
                "promql",
                Duration::from_secs(5),
                move |c| *k.lock() = Some(c),
                |_| "ok",
            )
            .await;
        assert_eq!(r, Ok(()));
        let flag = kept.lock().take().unwrap();
        assert_eq!(Arc::strong_count(&flag), 1, "a reference was leaked");
        assert!(
            !flag.load(Ordering::Relaxed),
            "a finished query is not canceled"
        );
    }

    #[tokio::test]
    async fn a_panicking_query_is_an_error_and_frees_its_slot() {
        let g = gate(1);
        let r = g
            .run(
                "promql",
                Duration::from_secs(1),
                |_| -> u8 { panic!("boom") },
                |_| "ok",
            )
            .await;
        assert_eq!(r, Err(GateError::Panicked("boom".into())));
        assert_eq!(
            g.run("promql", Duration::from_secs(1), |_| 2, |_| "ok")
                .await,
            Ok(2)
        );
    }
}
