//! What a run of probe results means, as the kubelet's prober has it: a
//! probe passes after `success_threshold` consecutive successes and fails
//! after `failure_threshold` consecutive failures; a liveness probe starts
//! passing, a readiness probe starts failing (not ready until it succeeds).
//! Pure: results go in, transitions come out.
//!
//! Unlike the kubelet, the agent does not restart anything itself: it reports
//! a failure (a `probe_failed` event) each time the consecutive failures reach
//! a multiple of the threshold, so the collector's restart rule — with its
//! cooldown and crash-loop guard — decides. A restarted container gets a
//! fresh state (the caller makes a new one).

use super::spec::ProbeKind;

/// What a result changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    None,
    /// `consecutive` failures in a row, a multiple of the failure threshold.
    Failed {
        consecutive: u32,
    },
    /// Passing again after having been reported failed.
    Recovered,
}

/// One probe's memory.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeState {
    /// Thresholded: live (liveness) or ready (readiness).
    pub passing: bool,
    /// The last result, and how many in a row were the same.
    pub last: Option<bool>,
    pub run: u32,
    pub runs_total: u64,
    pub failures_total: u64,
    reported_failed: bool,
}

impl ProbeState {
    pub fn new(kind: ProbeKind) -> Self {
        ProbeState {
            passing: kind == ProbeKind::Liveness,
            last: None,
            run: 0,
            runs_total: 0,
            failures_total: 0,
            reported_failed: false,
        }
    }

    /// Takes one result.
    pub fn record(
        &mut self,
        ok: bool,
        success_threshold: u32,
        failure_threshold: u32,
    ) -> Transition {
        self.runs_total += 1;
        if !ok {
            self.failures_total += 1;
        }
        if self.last == Some(ok) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(ok);
            self.run = 1;
        }
        if ok {
            if !self.passing && self.run >= success_threshold {
                self.passing = true;
                if self.reported_failed {
                    self.reported_failed = false;
                    return Transition::Recovered;
                }
            }
            Transition::None
        } else if self.run.is_multiple_of(failure_threshold.max(1)) {
            self.passing = false;
            self.reported_failed = true;
            Transition::Failed {
                consecutive: self.run,
            }
        } else {
            Transition::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_fails_after_the_threshold_and_again_every_threshold() {
        let mut s = ProbeState::new(ProbeKind::Liveness);
        assert!(s.passing);
        assert_eq!(s.record(false, 1, 3), Transition::None);
        assert_eq!(s.record(false, 1, 3), Transition::None);
        assert!(s.passing, "two failures of three: still live");
        assert_eq!(s.record(false, 1, 3), Transition::Failed { consecutive: 3 });
        assert!(!s.passing);
        assert_eq!(s.record(false, 1, 3), Transition::None);
        assert_eq!(s.record(false, 1, 3), Transition::None);
        assert_eq!(s.record(false, 1, 3), Transition::Failed { consecutive: 6 });
        assert_eq!(s.record(true, 1, 3), Transition::Recovered);
        assert!(s.passing);
        assert_eq!((s.runs_total, s.failures_total), (7, 6));
    }

    #[test]
    fn a_success_breaks_the_run_of_failures() {
        let mut s = ProbeState::new(ProbeKind::Liveness);
        s.record(false, 1, 3);
        s.record(false, 1, 3);
        assert_eq!(s.record(true, 1, 3), Transition::None);
        s.record(false, 1, 3);
        assert_eq!(s.record(false, 1, 3), Transition::None);
        assert!(s.passing);
    }

    #[test]
    fn readiness_starts_unready_and_needs_its_successes() {
        let mut s = ProbeState::new(ProbeKind::Readiness);
        assert!(!s.passing);
        assert_eq!(s.record(true, 2, 3), Transition::None);
        assert!(!s.passing, "one success of two");
        assert_eq!(s.record(true, 2, 3), Transition::None);
        assert!(s.passing, "ready; never failed, so nothing recovered");
        s.record(false, 2, 1);
        assert!(!s.passing);
        s.record(true, 2, 1);
        assert_eq!(s.record(true, 2, 1), Transition::Recovered);
    }
}
