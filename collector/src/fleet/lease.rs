//! Leader election over a lease record with optimistic concurrency — the
//! decisions of client-go's `leaderelection` (`tryAcquireOrRenew`), kept pure:
//! the caller reads the record, asks [`Elector::decide`], writes what it
//! says (a create, or an update conditional on the version it read), and
//! reports the outcome. The clock is passed in.
//!
//! Safety rests on three rules, with every time on the caller's own
//! monotonic clock (no two hosts' clocks are ever compared; only their rates
//! must agree within `(lease_duration − renew_deadline) / lease_duration`):
//! - a candidate may take the lease only when the record it read is the one
//!   it first saw `lease_duration` ago (the record's `leaseDurationSeconds`)
//!   unchanged, or released (empty holder) — a write is conditional on that
//!   version, so a renewal in between makes the take fail;
//! - a leader may act only until `renew_deadline` after it *sent* its last
//!   successful write ([`Elector::may_act`]), so it stops before any
//!   candidate that saw that write (or a later one) can take over:
//!   `sent + renew_deadline < applied + lease_duration ≤ seen + lease_duration`;
//! - a leader that sees another holder in the record stops at once.
//!
//! Not here: the wire (Kubernetes Lease, [`super::kube_lease`]), the loop
//! and what acting means ([`super::leader`]).

use std::time::{Duration, Instant, SystemTime};

/// The fields of a lease that the election reads and writes
/// (`coordination.k8s.io/v1` `LeaseSpec`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    /// Empty: released, anyone may take it.
    pub holder: String,
    pub lease_duration_seconds: i32,
    /// MicroTime (RFC 3339, microseconds); informational — expiry is judged
    /// on the reader's own clock, never from these.
    pub acquire_time: String,
    pub renew_time: String,
    pub transitions: i32,
}

/// What to write next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No lease exists: create it, held by us.
    Create(LeaseRecord),
    /// Take or renew: write `record` only if the lease is still at `version`.
    Update {
        record: LeaseRecord,
        version: String,
    },
    /// Someone else holds a lease that has not expired.
    Wait,
}

/// The timings, as client-go names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timings {
    /// How long a lease holds once written, for others.
    pub lease_duration: Duration,
    /// How long after sending its last successful write the leader acts.
    pub renew_deadline: Duration,
    /// How often candidates and the leader try.
    pub retry_period: Duration,
}

impl Default for Timings {
    /// client-go's and kube-controller-manager's defaults.
    fn default() -> Self {
        Timings {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl Timings {
    /// client-go's constraints: `lease_duration > renew_deadline >
    /// 1.2 × retry_period`, whole seconds for the lease (the record holds
    /// seconds).
    pub fn validate(&self) -> Result<(), String> {
        if self.lease_duration < Duration::from_secs(1) || self.lease_duration.subsec_nanos() != 0 {
            return Err(format!(
                "leader_election_lease_duration {:?} must be whole seconds, at least 1s",
                self.lease_duration
            ));
        }
        if self.renew_deadline >= self.lease_duration {
            return Err(format!(
                "leader_election_renew_deadline {:?} must be below leader_election_lease_duration {:?}",
                self.renew_deadline, self.lease_duration
            ));
        }
        if self.retry_period.is_zero() || self.retry_period.mul_f64(1.2) >= self.renew_deadline {
            return Err(format!(
                "leader_election_retry_period {:?} must be above 0 and below leader_election_renew_deadline / 1.2 ({:?})",
                self.retry_period, self.renew_deadline
            ));
        }
        Ok(())
    }
}

/// The record last seen and when (on our clock) it was first seen.
#[derive(Clone, Debug)]
struct Observed {
    record: LeaseRecord,
    version: String,
    at: Instant,
}

/// One candidate's view of the election.
#[derive(Debug)]
pub struct Elector {
    identity: String,
    timings: Timings,
    observed: Option<Observed>,
    /// Acting is allowed strictly before this.
    leading_until: Option<Instant>,
}

/// MicroTime as Kubernetes writes it: `2006-01-02T15:04:05.000000Z`.
pub fn micro_time(t: SystemTime) -> String {
    vigil_common::time::format_rfc3339_micros(vigil_common::time::unix_ns(t))
}

impl Elector {
    pub fn new(identity: impl Into<String>, timings: Timings) -> Self {
        Elector {
            identity: identity.into(),
            timings,
            observed: None,
            leading_until: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn timings(&self) -> Timings {
        self.timings
    }

    /// True while this candidate leads: it wrote the lease successfully less
    /// than `renew_deadline` before `now` (measured from sending the write)
    /// and has not seen anyone else take it since.
    pub fn may_act(&self, now: Instant) -> bool {
        self.leading_until.is_some_and(|u| now < u)
    }

    /// The instant acting stops unless a renewal succeeds first.
    pub fn leading_until(&self) -> Option<Instant> {
        self.leading_until
    }

    /// Decides from the lease as just read (`None`: it does not exist) at
    /// `now` on our clock; `wall` only stamps the record's times.
    pub fn decide(
        &mut self,
        current: Option<(LeaseRecord, String)>,
        now: Instant,
        wall: SystemTime,
    ) -> Decision {
        let stamp = micro_time(wall);
        let mine = |transitions: i32, acquire: String| LeaseRecord {
            holder: self.identity.clone(),
            lease_duration_seconds: self.timings.lease_duration.as_secs().min(i32::MAX as u64)
                as i32,
            acquire_time: acquire,
            renew_time: stamp.clone(),
            transitions,
        };
        let Some((record, version)) = current else {
            return Decision::Create(mine(0, stamp.clone()));
        };
        let changed = self
            .observed
            .as_ref()
            .is_none_or(|o| o.version != version || o.record != record);
        if changed {
            self.observed = Some(Observed {
                record: record.clone(),
                version: version.clone(),
                at: now,
            });
        }
        if record.holder != self.identity && self.leading_until.is_some() {
            // someone else wrote the lease: we lost it, whatever our deadline says
            self.leading_until = None;
        }
        if record.holder == self.identity {
            // renew, keeping when we acquired it
            return Decision::Update {
                record: mine(record.transitions, record.acquire_time.clone()),
                version,
            };
        }
        let seen_at = self.observed.as_ref().map(|o| o.at).unwrap_or(now);
        let valid_for = Duration::from_secs(record.lease_duration_seconds.max(0) as u64);
        if !record.holder.is_empty() && now < seen_at + valid_for {
            return Decision::Wait;
        }
        Decision::Update {
            record: mine(record.transitions.saturating_add(1), stamp.clone()),
            version,
        }
    }

    /// A write succeeded: `record` is now at `version`. `sent` is when the
    /// write request left (the start of the acting window).
    pub fn written(&mut self, record: LeaseRecord, version: String, sent: Instant, now: Instant) {
        self.observed = Some(Observed {
            record,
            version,
            at: now,
        });
        let until = sent + self.timings.renew_deadline;
        self.leading_until = Some(match self.leading_until {
            Some(u) if u > until => u,
            _ => until,
        });
    }

    /// A write failed (conflict, error, timeout): nothing changes — the
    /// deadline of the last success still bounds acting.
    pub fn write_failed(&mut self) {}

    /// Stops acting now (shutdown, before releasing).
    pub fn step_down(&mut self) {
        self.leading_until = None;
    }

    /// The write that releases the lease (after [`Self::step_down`]):
    /// client-go's `ReleaseOnCancel` — empty holder, a 1 s lease — if the
    /// last record we saw is ours.
    pub fn release(&self, wall: SystemTime) -> Option<(LeaseRecord, String)> {
        let o = self.observed.as_ref()?;
        if o.record.holder != self.identity {
            return None;
        }
        let stamp = micro_time(wall);
        Some((
            LeaseRecord {
                holder: String::new(),
                lease_duration_seconds: 1,
                acquire_time: stamp.clone(),
                renew_time: stamp,
                transitions: o.record.transitions,
            },
            o.version.clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BinaryHeap};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn create_then_renew_then_others_wait() {
        let t0 = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut a = Elector::new("a", Timings::default());
        let mut b = Elector::new("b", Timings::default());
        let Decision::Create(r) = a.decide(None, t0, wall) else {
            panic!("expected create")
        };
        assert_eq!(r.holder, "a");
        assert_eq!(r.lease_duration_seconds, 15);
        assert_eq!(r.renew_time, "2023-11-14T22:13:20.000000Z");
        a.written(r.clone(), "1".into(), t0, t0 + ms(5));
        assert!(a.may_act(t0 + ms(9_999)));
        assert!(
            !a.may_act(t0 + ms(10_000)),
            "acting ends at sent + renew_deadline"
        );
        // b sees a's lease and waits for 15 s of its own clock
        assert_eq!(
            b.decide(Some((r.clone(), "1".into())), t0 + ms(100), wall),
            Decision::Wait
        );
        assert_eq!(
            b.decide(Some((r.clone(), "1".into())), t0 + ms(15_099), wall),
            Decision::Wait
        );
        // unchanged for a full lease: b may take it, conditionally on version 1
        match b.decide(Some((r.clone(), "1".into())), t0 + ms(15_100), wall) {
            Decision::Update { record, version } => {
                assert_eq!(record.holder, "b");
                assert_eq!(record.transitions, 1);
                assert_eq!(version, "1");
            }
            d => panic!("{d:?}"),
        }
        // a renewal in between restarts b's wait
        match a.decide(Some((r.clone(), "1".into())), t0 + ms(2_000), wall) {
            Decision::Update { record, version } => {
                assert_eq!(
                    record.acquire_time, r.acquire_time,
                    "renewal keeps acquireTime"
                );
                assert_eq!(version, "1");
                a.written(record.clone(), "2".into(), t0 + ms(2_000), t0 + ms(2_010));
                assert_eq!(
                    b.decide(Some((record, "2".into())), t0 + ms(15_200), wall),
                    Decision::Wait
                );
            }
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn a_leader_that_sees_another_holder_stops_at_once_and_a_release_is_taken_at_once() {
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let mut a = Elector::new("a", Timings::default());
        let Decision::Create(r) = a.decide(None, t0, wall) else {
            panic!()
        };
        a.written(r.clone(), "1".into(), t0, t0);
        let theirs = LeaseRecord {
            holder: "b".into(),
            ..r.clone()
        };
        assert_eq!(
            a.decide(Some((theirs, "2".into())), t0 + ms(1), wall),
            Decision::Wait
        );
        assert!(!a.may_act(t0 + ms(2)));
        // a released lease (empty holder) is free at once
        let mut c = Elector::new("c", Timings::default());
        let released = LeaseRecord {
            holder: String::new(),
            lease_duration_seconds: 1,
            ..r
        };
        assert!(matches!(
            c.decide(Some((released, "3".into())), t0, wall),
            Decision::Update { .. }
        ));
    }

    #[test]
    fn release_only_what_is_ours() {
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let mut a = Elector::new("a", Timings::default());
        assert!(a.release(wall).is_none());
        let Decision::Create(r) = a.decide(None, t0, wall) else {
            panic!()
        };
        a.written(r, "7".into(), t0, t0);
        a.step_down();
        assert!(!a.may_act(t0));
        let (rel, v) = a.release(wall).unwrap();
        assert_eq!(
            (rel.holder.as_str(), rel.lease_duration_seconds, v.as_str()),
            ("", 1, "7")
        );
    }

    #[test]
    fn timings_are_checked_like_client_go() {
        assert!(Timings::default().validate().is_ok());
        let bad = |l, r, p| Timings {
            lease_duration: ms(l),
            renew_deadline: ms(r),
            retry_period: ms(p),
        };
        assert!(bad(10_000, 10_000, 2_000).validate().is_err());
        assert!(bad(15_000, 10_000, 9_000).validate().is_err());
        assert!(bad(15_500, 10_000, 2_000).validate().is_err());
        assert!(bad(15_000, 10_000, 0).validate().is_err());
    }

    // ---- a simulated fleet: many candidates, one lease store, random delays,
    // lost answers, crashes; acting windows must never overlap ----

    /// The API server: one record, versions, conditional writes.
    #[derive(Default)]
    struct Server {
        lease: Option<(LeaseRecord, u64)>,
        version: u64,
    }

    impl Server {
        fn get(&self) -> Option<(LeaseRecord, String)> {
            self.lease.clone().map(|(r, v)| (r, v.to_string()))
        }
        fn write(&mut self, d: &Decision) -> Option<String> {
            match d {
                Decision::Create(r) if self.lease.is_none() => {
                    self.version += 1;
                    self.lease = Some((r.clone(), self.version));
                }
                Decision::Update { record, version }
                    if self.lease.as_ref().map(|(_, v)| v.to_string()) == Some(version.clone()) =>
                {
                    self.version += 1;
                    self.lease = Some((record.clone(), self.version));
                }
                _ => return None,
            }
            Some(self.version.to_string())
        }
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
    enum Step {
        /// Read the lease (arrives at the server now, answer after a delay).
        Get,
        /// The read's answer arrives; decide and send the write.
        Answer,
        /// The write reaches the server.
        Apply,
        /// The write's answer arrives (unless lost).
        Written,
    }

    struct Cand {
        e: Elector,
        read: Option<Option<(LeaseRecord, String)>>,
        pending: Option<(Decision, Instant)>,
        result: Option<Option<String>>,
        dead_at: Option<Instant>,
        /// Acting windows [from, to) as the candidate itself would act.
        windows: Vec<(Instant, Instant)>,
    }

    /// A tiny deterministic generator (the test must be reproducible).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n.max(1)
        }
    }

    fn simulate(seed: u64, candidates: usize, crash: bool) -> (usize, Duration) {
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let timings = Timings::default();
        let mut rng = Rng(seed | 1);
        let mut server = Server::default();
        let mut cands: Vec<Cand> = (0..candidates)
            .map(|i| Cand {
                e: Elector::new(format!("c{i}"), timings),
                read: None,
                pending: None,
                result: None,
                dead_at: None,
                windows: Vec::new(),
            })
            .collect();
        // (time, candidate, step) — a min-heap by time
        let mut q: BinaryHeap<std::cmp::Reverse<(Duration, usize, Step)>> = BinaryHeap::new();
        for i in 0..candidates {
            q.push(std::cmp::Reverse((ms(rng.next(2_000)), i, Step::Get)));
        }
        let end = Duration::from_secs(600);
        let mut crashes = 0;
        while let Some(std::cmp::Reverse((at, i, step))) = q.pop() {
            if at > end {
                break;
            }
            let now = t0 + at;
            if cands[i].dead_at.is_some() {
                continue;
            }
            // now and then the leader crashes (kill -9): it stops everything
            if crash && step == Step::Get && cands[i].e.may_act(now) && rng.next(20) == 0 {
                cands[i].dead_at = Some(now);
                crashes += 1;
                // another process takes its place later, as a new candidate
                let id = cands.len();
                cands.push(Cand {
                    e: Elector::new(format!("c{id}"), timings),
                    read: None,
                    pending: None,
                    result: None,
                    dead_at: None,
                    windows: Vec::new(),
                });
                q.push(std::cmp::Reverse((at + ms(3_000), id, Step::Get)));
                continue;
            }
            let delay = |rng: &mut Rng| ms(rng.next(700));
            match step {
                Step::Get => {
                    cands[i].read = Some(server.get());
                    q.push(std::cmp::Reverse((at + delay(&mut rng), i, Step::Answer)));
                }
                Step::Answer => {
                    let read = cands[i].read.take().unwrap_or(None);
                    let d = cands[i].e.decide(read, now, wall);
                    if d == Decision::Wait {
                        let next = at + timings.retry_period + ms(rng.next(400));
                        q.push(std::cmp::Reverse((next, i, Step::Get)));
                    } else {
                        cands[i].pending = Some((d, now));
                        q.push(std::cmp::Reverse((at + delay(&mut rng), i, Step::Apply)));
                    }
                }
                Step::Apply => {
                    let Some((d, _)) = &cands[i].pending else {
                        continue;
                    };
                    // one write in ten fails at the server (an error answer)
                    let r = if rng.next(10) == 0 {
                        None
                    } else {
                        server.write(d)
                    };
                    cands[i].result = Some(r);
                    // slow answers: up to 3 s
                    q.push(std::cmp::Reverse((
                        at + ms(rng.next(3_000)),
                        i,
                        Step::Written,
                    )));
                }
                Step::Written => {
                    let Some((d, sent)) = cands[i].pending.take() else {
                        continue;
                    };
                    let result = cands[i].result.take().unwrap_or(None);
                    // one answer in ten is lost: the write may have happened
                    let lost = rng.next(10) == 0;
                    match (result, lost) {
                        (Some(v), false) => {
                            let record = match d {
                                Decision::Create(r) | Decision::Update { record: r, .. } => r,
                                Decision::Wait => unreachable!(),
                            };
                            cands[i].e.written(record, v, sent, now);
                            if let Some(u) = cands[i].e.leading_until() {
                                cands[i].windows.push((now, u));
                            }
                        }
                        _ => cands[i].e.write_failed(),
                    }
                    let next = at + timings.retry_period;
                    q.push(std::cmp::Reverse((next, i, Step::Get)));
                }
            }
            // a candidate that learned it lost cuts its window short
            let c = &mut cands[i];
            if !c.e.may_act(now)
                && let Some(w) = c.windows.last_mut()
                && w.1 > now
            {
                w.1 = now;
            }
        }
        // windows of a dead candidate end at its death
        let mut all: Vec<(Instant, Instant, usize)> = Vec::new();
        for (i, c) in cands.iter().enumerate() {
            for &(a, b) in &c.windows {
                let b = c.dead_at.map_or(b, |d| b.min(d));
                if a < b {
                    all.push((a, b, i));
                }
            }
        }
        // merge each candidate's overlapping windows (renewals), then check
        // that no two candidates' windows overlap
        let mut per: BTreeMap<usize, Vec<(Instant, Instant)>> = BTreeMap::new();
        for (a, b, i) in all {
            per.entry(i).or_default().push((a, b));
        }
        let mut merged: Vec<(Instant, Instant, usize)> = Vec::new();
        let mut led = Duration::ZERO;
        for (i, mut ws) in per {
            ws.sort();
            let mut cur: Option<(Instant, Instant)> = None;
            for (a, b) in ws {
                cur = match cur {
                    Some((ca, cb)) if a <= cb => Some((ca, cb.max(b))),
                    Some(c) => {
                        merged.push((c.0, c.1, i));
                        Some((a, b))
                    }
                    None => Some((a, b)),
                };
            }
            if let Some(c) = cur {
                merged.push((c.0, c.1, i));
            }
        }
        merged.sort();
        for w in merged.windows(2) {
            assert!(
                w[1].0 >= w[0].1,
                "seed {seed}: c{} acts from {:?} while c{} acts until {:?}",
                w[1].2,
                w[1].0 - t0,
                w[0].2,
                w[0].1 - t0
            );
        }
        for (a, b, _) in &merged {
            led += *b - *a;
        }
        (crashes, led)
    }

    #[test]
    fn two_never_act_at_once_through_delays_lost_answers_and_crashes() {
        let mut crashes = 0;
        for seed in 1..=200u64 {
            let (c, led) = simulate(seed * 7919, 2 + (seed % 3) as usize, seed % 2 == 0);
            crashes += c;
            // somebody leads most of the time (liveness, loosely)
            assert!(
                led > Duration::from_secs(300),
                "seed {seed}: led only {led:?}"
            );
        }
        assert!(
            crashes > 20,
            "the simulation must exercise crashes ({crashes})"
        );
    }
}
