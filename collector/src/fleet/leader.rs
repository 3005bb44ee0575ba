//! Which collector of a fleet acts: evaluates rules, notifies, restarts and
//! scales. [`Leadership`] is the one question everything that acts asks
//! ([`Leadership::may_act`], answered from a monotonic deadline, so a stuck
//! election loop cannot extend it); [`start`] keeps it current with one of:
//!
//! - `always` (the default: a single collector, or the dedicated replica of
//!   a fleet) and `never` (every other replica);
//! - `kubernetes-lease`: a `coordination.k8s.io/v1` Lease, as client-go's
//!   leader election uses it ([`super::lease`], [`super::kube_lease`]);
//! - `lock-file`: an exclusive `flock` on a file, held for the process's
//!   life — the kernel releases it when the process dies, even by
//!   `kill -9`, and never while it lives, so it fences by construction for
//!   collectors sharing one host's file system.
//!
//! Not here: what acting is (rules skip their evaluations, see
//! [`crate::rules::RuleManager::set_leadership`]; actions are gated by the
//! wrappers below).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use super::kube_lease::{LeaseClient, LeaseError, LeaseTarget};
use super::lease::{Decision, Elector, Timings};

/// How this collector learns whether it may act.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Election {
    /// Always acts (one collector, or the fleet's dedicated replica).
    Always,
    /// Never acts (the other replicas of a fleet with a dedicated one).
    Never,
    KubernetesLease {
        target: LeaseTarget,
        identity: String,
        timings: Timings,
    },
    LockFile {
        path: PathBuf,
        identity: String,
        retry_period: Duration,
    },
}

impl Election {
    pub fn name(&self) -> &'static str {
        match self {
            Election::Always => "always",
            Election::Never => "never",
            Election::KubernetesLease { .. } => "kubernetes-lease",
            Election::LockFile { .. } => "lock-file",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WhatLabels {
    what: String,
}

#[derive(Default)]
struct Metrics {
    leader: Gauge,
    transitions: Counter,
    errors: Family<ReasonLabels, Counter>,
    skipped: Family<WhatLabels, Counter>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Always,
    Never,
    /// Acting allowed strictly before this instant (`None`: not leading).
    Until(Option<Instant>),
}

struct Inner {
    state: Mutex<State>,
    /// Bumped whenever leadership may have changed; term-scoped tasks watch it.
    changed: tokio::sync::watch::Sender<u64>,
    generation: AtomicU64,
    metrics: Metrics,
}

/// Whether this collector may act now. Cheap to clone and to ask.
#[derive(Clone)]
pub struct Leadership {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Leadership({:?})", *self.inner.state.lock())
    }
}

impl Leadership {
    fn with(state: State) -> Self {
        let (changed, _) = tokio::sync::watch::channel(0);
        let l = Leadership {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                changed,
                generation: AtomicU64::new(0),
                metrics: Metrics::default(),
            }),
        };
        l.inner
            .metrics
            .leader
            .set(i64::from(matches!(state, State::Always)));
        l
    }

    /// A collector that always acts.
    pub fn always() -> Self {
        Self::with(State::Always)
    }

    /// A collector that never acts.
    pub fn never() -> Self {
        Self::with(State::Never)
    }

    /// Not leading until an election says so.
    fn elected() -> Self {
        Self::with(State::Until(None))
    }

    /// True while this collector may act.
    pub fn may_act(&self) -> bool {
        self.may_act_at(Instant::now())
    }

    pub fn may_act_at(&self, now: Instant) -> bool {
        match *self.inner.state.lock() {
            State::Always => true,
            State::Never => false,
            State::Until(u) => u.is_some_and(|u| now < u),
        }
    }

    /// Notified whenever leadership may have changed (gained, renewed,
    /// lost); read [`Self::may_act`] after a change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    fn set(&self, until: Option<Instant>, now: Instant) {
        let was = self.may_act_at(now);
        *self.inner.state.lock() = State::Until(until);
        let is = self.may_act_at(now);
        self.inner.metrics.leader.set(i64::from(is));
        if is && !was {
            self.inner.metrics.transitions.inc();
        }
        if is != was {
            let g = self.inner.generation.fetch_add(1, Ordering::Relaxed) + 1;
            self.inner.changed.send_replace(g);
        }
    }

    fn error(&self, reason: &str) {
        self.inner
            .metrics
            .errors
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
    }

    /// Counts something this collector did not do because it is not the leader.
    pub fn skipped(&self, what: &'static str, n: u64) {
        self.inner
            .metrics
            .skipped
            .get_or_create(&WhatLabels { what: what.into() })
            .inc_by(n);
    }

    pub fn register(&self, registry: &mut Registry) {
        let m = &self.inner.metrics;
        registry.register(
            "vigil_collector_leader",
            "1 while this collector is the one of its fleet that evaluates rules and acts",
            m.leader.clone(),
        );
        registry.register(
            "vigil_collector_leader_transitions",
            "Times this collector became the leader",
            m.transitions.clone(),
        );
        registry.register(
            "vigil_collector_leader_election_errors",
            "Failed leader-election requests, by reason (conflict, unreachable, status, malformed, config, lock)",
            m.errors.clone(),
        );
        registry.register(
            "vigil_collector_leader_skipped",
            "Work skipped because this collector is not the leader, by what (rule_group, trigger, alertmanager_webhook)",
            m.skipped.clone(),
        );
    }
}

/// Starts the election; the returned handle answers from then on, the
/// tasks end after `shutdown` (a Lease held is released, after acting
/// stopped).
pub fn start(
    election: &Election,
    shutdown: CancellationToken,
) -> Result<(Leadership, Vec<tokio::task::JoinHandle<()>>), LeaseError> {
    match election {
        Election::Always => Ok((Leadership::always(), Vec::new())),
        Election::Never => Ok((Leadership::never(), Vec::new())),
        Election::KubernetesLease {
            target,
            identity,
            timings,
        } => {
            // a request must end well within the renew deadline
            let timeout = (timings.renew_deadline / 2).max(Duration::from_millis(100));
            let client = LeaseClient::new(target, timeout)?;
            let l = Leadership::elected();
            let e = Elector::new(identity.clone(), *timings);
            tracing::info!(lease = %client.describe(), identity = %identity, "leader election by Kubernetes Lease");
            let task = tokio::spawn(run_lease(e, client, l.clone(), shutdown));
            Ok((l, vec![task]))
        }
        Election::LockFile {
            path,
            identity,
            retry_period,
        } => {
            let l = Leadership::elected();
            tracing::info!(file = %path.display(), identity = %identity, "leader election by lock file");
            let task = tokio::spawn(run_lock_file(
                path.clone(),
                identity.clone(),
                *retry_period,
                l.clone(),
                shutdown,
            ));
            Ok((l, vec![task]))
        }
    }
}

/// One round: read, decide, write. Updates `l` from the outcome.
pub(crate) async fn lease_round(e: &mut Elector, client: &LeaseClient, l: &Leadership) {
    let current = match client.get().await {
        Ok(c) => c,
        Err(err) => {
            l.error(err.reason());
            tracing::warn!(error = %err, "leader election: cannot read the lease");
            l.set(e.leading_until(), Instant::now());
            return;
        }
    };
    let decision = e.decide(current, Instant::now(), SystemTime::now());
    let sent = Instant::now();
    let result = match &decision {
        Decision::Wait => {
            l.set(e.leading_until(), Instant::now());
            return;
        }
        Decision::Create(r) => client.create(r).await.map(|v| (r.clone(), v)),
        Decision::Update { record, version } => client
            .update(record, version)
            .await
            .map(|v| (record.clone(), v)),
    };
    match result {
        Ok((record, version)) => {
            let was = l.may_act();
            e.written(record, version, sent, Instant::now());
            l.set(e.leading_until(), Instant::now());
            if l.may_act() && !was {
                tracing::info!(identity = %e.identity(), "became the leader");
            }
        }
        Err(err) => {
            e.write_failed();
            l.error(err.reason());
            if !matches!(err, LeaseError::Conflict { .. }) {
                tracing::warn!(error = %err, "leader election: cannot write the lease");
            }
            l.set(e.leading_until(), Instant::now());
        }
    }
}

async fn run_lease(
    mut e: Elector,
    client: LeaseClient,
    l: Leadership,
    shutdown: CancellationToken,
) {
    let t = e.timings();
    loop {
        let was = l.may_act();
        lease_round(&mut e, &client, &l).await;
        // candidates jitter (client-go: retry_period × [1, 1.2)); the
        // leader renews every retry_period; both wake when the deadline
        // passes, to report the loss at once
        let pause = if l.may_act() {
            t.retry_period
        } else {
            t.retry_period.mul_f64(1.0 + rand::random_range(0.0..0.2))
        };
        let wake = match e.leading_until() {
            Some(u) if u > Instant::now() => pause.min(u - Instant::now()),
            _ => pause,
        };
        if was && !l.may_act() {
            tracing::warn!(identity = %e.identity(), "lost the leadership");
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wake) => {}
        }
        l.set(e.leading_until(), Instant::now());
    }
    // stop acting first, then let the others take over at once
    e.step_down();
    l.set(None, Instant::now());
    if let Some((record, version)) = e.release(SystemTime::now()) {
        match client.update(&record, &version).await {
            Ok(_) => tracing::info!("leader election: lease released"),
            Err(err) => {
                tracing::warn!(error = %err, "leader election: cannot release the lease; it expires by itself")
            }
        }
    }
}

async fn run_lock_file(
    path: PathBuf,
    identity: String,
    retry_period: Duration,
    l: Leadership,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(retry_period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // kept open (and locked) until the process ends
    let mut held: Option<std::fs::File> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        if held.is_some() {
            continue;
        }
        match try_lock(&path, &identity) {
            Ok(Some(f)) => {
                held = Some(f);
                // held until this process ends: no deadline
                *l.inner.state.lock() = State::Always;
                l.inner.metrics.leader.set(1);
                l.inner.metrics.transitions.inc();
                let g = l.inner.generation.fetch_add(1, Ordering::Relaxed) + 1;
                l.inner.changed.send_replace(g);
                tracing::info!(identity = %identity, file = %path.display(), "became the leader (lock file)");
            }
            Ok(None) => {}
            Err(e) => {
                l.error("lock");
                tracing::warn!(file = %path.display(), error = %e, "leader election: cannot use the lock file");
            }
        }
    }
    // stop acting, then release (closing the file drops the lock)
    l.set(None, Instant::now());
    drop(held);
}

/// Takes the exclusive lock without waiting; `None` if another process has
/// it. Writes our identity into the file for people looking.
fn try_lock(path: &std::path::Path, identity: &str) -> std::io::Result<Option<std::fs::File>> {
    use std::io::{Seek, Write};
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)?;
    match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    f.set_len(0)?;
    f.rewind()?;
    writeln!(f, "{identity}")?;
    Ok(Some(f))
}

/// A default identity: the host name and a random suffix, so a restarted
/// process never mistakes its predecessor's lease for its own.
pub fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "collector".into());
    format!("{host}_{}", &crate::actions::new_id()[..8])
}

/// Alerts of the rules reach the actions only on the leader (rules do not
/// evaluate elsewhere; this guards the hand-over instant).
pub struct LeaderAlerts<S>(pub S, pub Leadership);

impl<S: crate::rules::AlertSink> crate::rules::AlertSink for LeaderAlerts<S> {
    fn alerts(&self, ts: i64, alerts: &[crate::rules::alerting::OutgoingAlert]) {
        if self.1.may_act() {
            self.0.alerts(ts, alerts);
        } else {
            self.1.skipped("trigger", alerts.len() as u64);
        }
    }
}

/// Agent events (an OOM kill) trigger actions only on the leader; the
/// other collectors count them (the rule pack's OOM alert, evaluated by
/// the leader, covers them there).
pub struct LeaderEvents<S>(pub S, pub Leadership);

impl<S: crate::ingest::EventSink> crate::ingest::EventSink for LeaderEvents<S> {
    fn publish(&self, events: &[crate::ingest::IngestedEvent]) {
        if self.1.may_act() {
            self.0.publish(events);
        } else {
            self.1.skipped("trigger", events.len() as u64);
        }
    }
}

/// The autoscalers' queries answer only on the leader; elsewhere they fail
/// (the scaler then decides nothing), so a scaler acts on one collector.
pub struct LeaderSource(
    pub Arc<dyn crate::actions::source::MetricSource>,
    pub Leadership,
);

impl crate::actions::source::MetricSource for LeaderSource {
    fn query(&self, expr: &str, at_ms: i64) -> crate::actions::source::QueryResult {
        if self.1.may_act() {
            self.0.query(expr, at_ms)
        } else {
            self.1.skipped("autoscaler_query", 1);
            Err(crate::actions::source::SourceError::NotLeader)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::kube_lease::standin;
    use super::*;

    #[test]
    fn static_modes() {
        assert!(Leadership::always().may_act());
        assert!(!Leadership::never().may_act());
        let l = Leadership::elected();
        assert!(!l.may_act());
        let now = Instant::now();
        l.set(Some(now + Duration::from_secs(5)), now);
        assert!(l.may_act_at(now + Duration::from_secs(4)));
        assert!(
            !l.may_act_at(now + Duration::from_secs(5)),
            "the deadline is checked, not a flag"
        );
    }

    #[test]
    fn a_lock_file_is_held_by_one_and_freed_when_its_holder_closes_it() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("leader.lock");
        let a = try_lock(&p, "a").unwrap().expect("a takes the free lock");
        assert!(
            try_lock(&p, "b").unwrap().is_none(),
            "b must not get a held lock"
        );
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "a\n");
        drop(a);
        let _b = try_lock(&p, "b")
            .unwrap()
            .expect("freed when a's file closes");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "b\n");
        assert!(try_lock(&d.path().join("no/such/dir"), "c").is_err());
    }

    /// Two collectors' elections against the stand-in API server, on real
    /// HTTP with short timings: one leads; when it stops renewing (its
    /// process frozen, simulated by not running its rounds) it stops acting
    /// before the other takes over; a graceful stop hands over at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_collectors_over_the_standin_never_act_at_once() {
        let s = Arc::new(standin::Server::default());
        let base = standin::start(s.clone()).await;
        // generous against a loaded machine: a stall of the test thread
        // shorter than the renew deadline must not end a's term
        let t = Timings {
            lease_duration: Duration::from_secs(5),
            renew_deadline: Duration::from_secs(4),
            retry_period: Duration::from_millis(300),
        };
        let target = LeaseTarget {
            api_server: Some(base),
            token_file: None,
            ca_file: None,
            namespace: Some("vigil".into()),
            name: "collectors".into(),
        };
        let client = LeaseClient::new(&target, Duration::from_millis(500)).unwrap();
        let (la, lb) = (Leadership::elected(), Leadership::elected());
        let (mut ea, mut eb) = (Elector::new("a", t), Elector::new("b", t));
        // a first, then both in turns: a leads, b waits
        lease_round(&mut ea, &client, &la).await;
        assert!(la.may_act());
        for _ in 0..5 {
            lease_round(&mut eb, &client, &lb).await;
            lease_round(&mut ea, &client, &la).await;
            assert!(la.may_act() && !lb.may_act());
            tokio::time::sleep(t.retry_period).await;
        }
        // a freezes (no more rounds); b keeps trying. Watch both.
        let frozen_at = Instant::now();
        let mut a_stopped: Option<Instant> = None;
        let b_took = loop {
            lease_round(&mut eb, &client, &lb).await;
            let now = Instant::now();
            if !la.may_act_at(now) && a_stopped.is_none() {
                a_stopped = Some(now);
            }
            if lb.may_act_at(now) {
                assert!(!la.may_act_at(now), "both act at once");
                break now;
            }
            assert!(
                now - frozen_at < Duration::from_secs(30),
                "b never took over"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let a_stopped = a_stopped.expect("a stopped acting");
        assert!(
            a_stopped <= b_took,
            "a stopped at {a_stopped:?}, b took at {b_took:?}"
        );
        // a wakes up: its next round sees b's lease and it does not act
        lease_round(&mut ea, &client, &la).await;
        assert!(!la.may_act() && lb.may_act());
        // b hands over gracefully: step down, release; a takes it at once
        eb.step_down();
        lb.set(None, Instant::now());
        let (rel, v) = eb.release(SystemTime::now()).unwrap();
        client.update(&rel, &v).await.unwrap();
        lease_round(&mut ea, &client, &la).await;
        assert!(la.may_act() && !lb.may_act());
        assert!(s.violations.lock().is_empty(), "{:?}", s.violations.lock());
    }

    /// The election loop as the collector runs it: the API server goes
    /// away, the leader's deadline passes and it stops acting by itself;
    /// shutdown releases the lease.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_loop_stops_acting_when_the_api_server_is_gone_and_releases_on_shutdown() {
        let s = Arc::new(standin::Server::default());
        let base = standin::start(s.clone()).await;
        let election = Election::KubernetesLease {
            target: LeaseTarget {
                api_server: Some(base),
                token_file: None,
                ca_file: None,
                namespace: Some("vigil".into()),
                name: "loop".into(),
            },
            identity: "me".into(),
            timings: Timings {
                lease_duration: Duration::from_secs(2),
                renew_deadline: Duration::from_millis(1200),
                retry_period: Duration::from_millis(200),
            },
        };
        let sd = CancellationToken::new();
        let (l, tasks) = start(&election, sd.clone()).unwrap();
        let mut changes = l.subscribe();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !l.may_act() {
            assert!(Instant::now() < deadline, "never became leader");
            let _ = tokio::time::timeout(Duration::from_millis(200), changes.changed()).await;
        }
        s.down.store(true, Ordering::Relaxed);
        let down = Instant::now();
        // every write that succeeds was sent before `down`: acting ends by
        // down + renew_deadline whatever the loop does
        let bound = down + Duration::from_millis(1200);
        while l.may_act() {
            assert!(!l.may_act_at(bound), "would act past its deadline");
            assert!(
                Instant::now() < down + Duration::from_secs(10),
                "kept acting"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        s.down.store(false, Ordering::Relaxed);
        while !l.may_act() {
            assert!(
                Instant::now() < deadline + Duration::from_secs(10),
                "never came back"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sd.cancel();
        for t in tasks {
            t.await.unwrap();
        }
        assert!(!l.may_act());
        let lease = s.lease.lock().clone().unwrap();
        assert!(
            lease["spec"].get("holderIdentity").is_none(),
            "released: {lease}"
        );
        assert_eq!(lease["spec"]["leaseDurationSeconds"], 1);
        assert!(s.violations.lock().is_empty(), "{:?}", s.violations.lock());
    }
}
