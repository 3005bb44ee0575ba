//! The Kubernetes HPA algorithm, as pure functions over explicit time, so the
//! autoscaler can persist its state and tests can drive the clock.
//!
//! Follows `pkg/controller/podautoscaler` (replica_calculator.go and
//! horizontal.go): the ratio with tolerance, missing/unready pods, the
//! stabilization windows (scale-up takes the lowest recommendation in its
//! window, scale-down the highest), and the rate policies (Pods/Percent per
//! period, `selectPolicy` Max/Min/Disabled). Not here: where the metric or the
//! current replica count come from, or how a scale is carried out.

use serde::{Deserialize, Serialize};

/// HPA's default tolerance: no change while |1 − metric/target| ≤ 0.1.
pub const DEFAULT_TOLERANCE: f64 = 0.1;

/// How a scaling policy measures change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyType {
    Pods,
    Percent,
}

/// One rate policy: at most `value` pods (or percent) per `period_seconds`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    #[serde(rename = "type")]
    pub kind: PolicyType,
    pub value: u32,
    pub period_seconds: u32,
}

/// Which policy wins when several apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub enum SelectPolicy {
    /// The policy allowing the largest change (HPA's default).
    #[default]
    Max,
    /// The policy allowing the smallest change.
    Min,
    /// No scaling in this direction.
    Disabled,
}

/// Scaling rules for one direction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rules {
    pub stabilization_window_seconds: u32,
    pub select_policy: SelectPolicy,
    pub policies: Vec<Policy>,
}

impl Rules {
    /// HPA default for scale-up: no stabilization; max(4 pods, 100%) per 15 s.
    pub fn default_up() -> Self {
        Rules {
            stabilization_window_seconds: 0,
            select_policy: SelectPolicy::Max,
            policies: vec![
                Policy {
                    kind: PolicyType::Pods,
                    value: 4,
                    period_seconds: 15,
                },
                Policy {
                    kind: PolicyType::Percent,
                    value: 100,
                    period_seconds: 15,
                },
            ],
        }
    }

    /// HPA default for scale-down: 300 s stabilization; 100% per 15 s.
    pub fn default_down() -> Self {
        Rules {
            stabilization_window_seconds: 300,
            select_policy: SelectPolicy::Max,
            policies: vec![Policy {
                kind: PolicyType::Percent,
                value: 100,
                period_seconds: 15,
            }],
        }
    }
}

/// What one pod (replica) reported.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PodMetric {
    /// A ready pod with a value.
    Ready(f64),
    /// A pod that exists but is not ready yet (counted as 0 on scale-up).
    Unready,
    /// A pod with no metric (100% of target on scale-down, 0 on scale-up).
    Missing,
}

/// The replica count the metric asks for, before stabilization and rate
/// limits (replica_calculator.go). `pods` has one entry per current replica.
/// Returns `None` when no pod has a metric: no data is never read as zero.
pub fn metric_replicas(pods: &[PodMetric], target: f64, tolerance: f64) -> Option<u32> {
    let current = pods.len() as u32;
    let ready: Vec<f64> = pods
        .iter()
        .filter_map(|p| match p {
            PodMetric::Ready(v) => Some(*v),
            _ => None,
        })
        .collect();
    if ready.is_empty() || target.is_nan() || target <= 0.0 {
        return None;
    }
    let missing = pods
        .iter()
        .filter(|p| matches!(p, PodMetric::Missing))
        .count();
    let unready = pods
        .iter()
        .filter(|p| matches!(p, PodMetric::Unready))
        .count();
    let sum: f64 = ready.iter().sum();
    let ratio = sum / ready.len() as f64 / target;
    let in_tolerance = |r: f64| (1.0 - r).abs() <= tolerance;

    let scale_up_with_unready = ratio > 1.0 && unready > 0;
    if missing == 0 && !scale_up_with_unready {
        if in_tolerance(ratio) {
            return Some(current);
        }
        // ceil over ready pods only, as the HPA does
        return Some((ratio * ready.len() as f64).ceil() as u32);
    }
    // Fill in the gaps: missing pods use 100% of target when scaling down and
    // 0 when scaling up; unready pods count as 0 when scaling up.
    let mut total = sum;
    let mut count = ready.len();
    if ratio < 1.0 {
        total += target * missing as f64;
        count += missing;
    } else {
        count += missing;
    }
    if scale_up_with_unready {
        count += unready;
    }
    let new_ratio = total / count as f64 / target;
    if in_tolerance(new_ratio)
        || (ratio > 1.0 && new_ratio < 1.0)
        || (ratio < 1.0 && new_ratio > 1.0)
    {
        return Some(current);
    }
    let new_replicas = (new_ratio * count as f64).ceil() as u32;
    if (new_ratio < 1.0 && new_replicas > current) || (new_ratio > 1.0 && new_replicas < current) {
        return Some(current);
    }
    Some(new_replicas)
}

/// The single-value form: an aggregate metric (e.g. average CPU across the
/// workload) for `current` ready replicas.
pub fn desired_from_average(current: u32, metric: f64, target: f64, tolerance: f64) -> Option<u32> {
    if current == 0 || !metric.is_finite() {
        return None;
    }
    metric_replicas(
        &vec![PodMetric::Ready(metric); current as usize],
        target,
        tolerance,
    )
}

/// A recommendation remembered for the stabilization windows.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    pub at_ms: i64,
    pub replicas: u32,
}

/// A scale that happened, remembered for the rate policies.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScaleEvent {
    pub at_ms: i64,
    /// Replicas added (scale-up) or removed (scale-down), always positive.
    pub change: u32,
}

/// What an autoscaler must remember between evaluations (and restarts).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScalerState {
    pub recommendations: Vec<Recommendation>,
    pub up_events: Vec<ScaleEvent>,
    pub down_events: Vec<ScaleEvent>,
}

/// The behaviour of one autoscaler.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Behavior {
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub up: Rules,
    pub down: Rules,
}

/// Why the final count differs from the metric's wish.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Limit {
    DesiredWithinRange,
    ScaleUpLimit,
    ScaleDownLimit,
    TooManyReplicas,
    TooFewReplicas,
    Stabilized,
}

/// One decision: from `current` to `replicas`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub current: u32,
    /// The metric's wish before stabilization and limits.
    pub recommended: u32,
    /// What to scale to (equal to `current`: nothing to do).
    pub replicas: u32,
    pub limit: Limit,
}

impl ScalerState {
    /// Applies stabilization and rate limits to the metric's recommendation,
    /// records it, and returns the decision (horizontal.go's
    /// normalizeDesiredReplicasWithBehaviors). Call [`ScalerState::record_scale`]
    /// once the scale was actually carried out.
    pub fn decide(
        &mut self,
        now_ms: i64,
        current: u32,
        recommended: u32,
        b: &Behavior,
    ) -> Decision {
        // Outside [min, max] the bounds win at once, as the HPA does.
        if current > b.max_replicas {
            return Decision {
                current,
                recommended,
                replicas: b.max_replicas,
                limit: Limit::TooManyReplicas,
            };
        }
        if current < b.min_replicas {
            return Decision {
                current,
                recommended,
                replicas: b.min_replicas,
                limit: Limit::TooFewReplicas,
            };
        }
        let stabilized = self.stabilize(now_ms, current, recommended, b);
        let (replicas, mut limit) = self.rate_limit(now_ms, current, stabilized, b);
        if stabilized != recommended && limit == Limit::DesiredWithinRange {
            limit = Limit::Stabilized;
        }
        Decision {
            current,
            recommended,
            replicas,
            limit,
        }
    }

    fn stabilize(&mut self, now_ms: i64, current: u32, desired: u32, b: &Behavior) -> u32 {
        let up_cutoff = now_ms - i64::from(b.up.stabilization_window_seconds) * 1000;
        let down_cutoff = now_ms - i64::from(b.down.stabilization_window_seconds) * 1000;
        let mut up = desired;
        let mut down = desired;
        for r in &self.recommendations {
            if r.at_ms > up_cutoff {
                up = up.min(r.replicas);
            }
            if r.at_ms > down_cutoff {
                down = down.max(r.replicas);
            }
        }
        // forget what no window can see any more
        let oldest = up_cutoff.min(down_cutoff);
        self.recommendations.retain(|r| r.at_ms >= oldest);
        self.recommendations.push(Recommendation {
            at_ms: now_ms,
            replicas: desired,
        });
        current.max(up).min(down)
    }

    fn change_in_period(events: &[ScaleEvent], now_ms: i64, period_seconds: u32) -> u32 {
        let cutoff = now_ms - i64::from(period_seconds) * 1000;
        events
            .iter()
            .filter(|e| e.at_ms > cutoff)
            .map(|e| e.change)
            .sum()
    }

    fn rate_limit(&self, now_ms: i64, current: u32, desired: u32, b: &Behavior) -> (u32, Limit) {
        let cur = i64::from(current);
        if desired > current {
            let limit = self.scale_up_limit(now_ms, cur, &b.up).max(cur);
            let (max_allowed, reason) = if i64::from(b.max_replicas) > limit {
                (limit, Limit::ScaleUpLimit)
            } else {
                (i64::from(b.max_replicas), Limit::TooManyReplicas)
            };
            if i64::from(desired) > max_allowed {
                return (max_allowed.max(0) as u32, reason);
            }
        } else if desired < current {
            let limit = self.scale_down_limit(now_ms, cur, &b.down).min(cur);
            let (min_allowed, reason) = if i64::from(b.min_replicas) < limit {
                (limit, Limit::ScaleDownLimit)
            } else {
                (i64::from(b.min_replicas), Limit::TooFewReplicas)
            };
            if i64::from(desired) < min_allowed {
                return (min_allowed.max(0) as u32, reason);
            }
        }
        (desired, Limit::DesiredWithinRange)
    }

    fn period_start(&self, now_ms: i64, current: i64, p: &Policy) -> i64 {
        let added = i64::from(Self::change_in_period(
            &self.up_events,
            now_ms,
            p.period_seconds,
        ));
        let removed = i64::from(Self::change_in_period(
            &self.down_events,
            now_ms,
            p.period_seconds,
        ));
        current - added + removed
    }

    fn scale_up_limit(&self, now_ms: i64, current: i64, rules: &Rules) -> i64 {
        let (mut result, pick): (i64, fn(i64, i64) -> i64) = match rules.select_policy {
            SelectPolicy::Disabled => return current,
            SelectPolicy::Min => (i64::MAX, i64::min),
            SelectPolicy::Max => (i64::MIN, i64::max),
        };
        for p in &rules.policies {
            let start = self.period_start(now_ms, current, p);
            let proposed = match p.kind {
                PolicyType::Pods => start + i64::from(p.value),
                PolicyType::Percent => {
                    (start as f64 * (1.0 + f64::from(p.value) / 100.0)).ceil() as i64
                }
            };
            result = pick(result, proposed);
        }
        if rules.policies.is_empty() {
            current
        } else {
            result
        }
    }

    fn scale_down_limit(&self, now_ms: i64, current: i64, rules: &Rules) -> i64 {
        let (mut result, pick): (i64, fn(i64, i64) -> i64) = match rules.select_policy {
            SelectPolicy::Disabled => return current,
            SelectPolicy::Min => (i64::MIN, i64::max),
            SelectPolicy::Max => (i64::MAX, i64::min),
        };
        for p in &rules.policies {
            let start = self.period_start(now_ms, current, p);
            let proposed = match p.kind {
                PolicyType::Pods => start - i64::from(p.value),
                // truncation, as the HPA's int32 conversion
                PolicyType::Percent => (start as f64 * (1.0 - f64::from(p.value) / 100.0)) as i64,
            };
            result = pick(result, proposed);
        }
        if rules.policies.is_empty() {
            current
        } else {
            result
        }
    }

    /// Remembers a scale that was carried out, for the rate policies. Events
    /// older than the longest policy period are forgotten.
    pub fn record_scale(&mut self, now_ms: i64, from: u32, to: u32, b: &Behavior) {
        let longest = |r: &Rules| {
            r.policies
                .iter()
                .map(|p| p.period_seconds)
                .max()
                .unwrap_or(0)
        };
        let keep_from = |r: &Rules| now_ms - i64::from(longest(r)) * 1000;
        let (up_from, down_from) = (keep_from(&b.up), keep_from(&b.down));
        self.up_events.retain(|e| e.at_ms > up_from);
        self.down_events.retain(|e| e.at_ms > down_from);
        if to > from {
            self.up_events.push(ScaleEvent {
                at_ms: now_ms,
                change: to - from,
            });
        } else if to < from {
            self.down_events.push(ScaleEvent {
                at_ms: now_ms,
                change: from - to,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults(min: u32, max: u32) -> Behavior {
        Behavior {
            min_replicas: min,
            max_replicas: max,
            up: Rules::default_up(),
            down: Rules::default_down(),
        }
    }

    #[test]
    fn classic_two_to_four_at_forty_percent() {
        // 2 replicas at 80% average against a 40% target → 4
        assert_eq!(
            desired_from_average(2, 80.0, 40.0, DEFAULT_TOLERANCE),
            Some(4)
        );
        // within tolerance: 43% against 40% → unchanged
        assert_eq!(
            desired_from_average(2, 43.0, 40.0, DEFAULT_TOLERANCE),
            Some(2)
        );
        // falling load: 4 replicas at 10% → 1
        assert_eq!(
            desired_from_average(4, 10.0, 40.0, DEFAULT_TOLERANCE),
            Some(1)
        );
        // no data is never zero
        assert_eq!(
            desired_from_average(2, f64::NAN, 40.0, DEFAULT_TOLERANCE),
            None
        );
        assert_eq!(
            metric_replicas(&[PodMetric::Missing, PodMetric::Missing], 40.0, 0.1),
            None
        );
    }

    #[test]
    fn missing_pods_count_as_full_on_scale_down_and_empty_on_scale_up() {
        // scale-down: ready pod at 10%, a missing pod counted at 100% of target:
        // (10 + 40) / 2 / 40 = 0.625 → ceil(1.25) = 2 = current → no change
        let pods = [PodMetric::Ready(10.0), PodMetric::Missing];
        assert_eq!(metric_replicas(&pods, 40.0, 0.1), Some(2));
        // scale-up: ready at 120%, missing counted as 0: (120+0)/2/40 = 1.5 → 3
        let pods = [PodMetric::Ready(120.0), PodMetric::Missing];
        assert_eq!(metric_replicas(&pods, 40.0, 0.1), Some(3));
        // scale-up with an unready pod counted as 0: 60/2/40 = 0.75 → reverses → unchanged
        let pods = [PodMetric::Ready(60.0), PodMetric::Unready];
        assert_eq!(metric_replicas(&pods, 40.0, 0.1), Some(2));
    }

    #[test]
    fn scale_down_waits_for_the_stabilization_window() {
        let b = defaults(2, 10);
        let mut s = ScalerState::default();
        // at t=0 the metric wants 4 (from 2): scale up at once
        let d = s.decide(0, 2, 4, &b);
        assert_eq!(d.replicas, 4);
        s.record_scale(0, 2, 4, &b);
        // load stops: the metric wants 1 from t=15s on; min is 2
        for t in (15..300).step_by(15) {
            let d = s.decide(t * 1000, 4, 1, &b);
            assert_eq!(d.replicas, 4, "scaled down too early at {t}s");
        }
        // after 300 s without a higher recommendation: down to min 2
        let d = s.decide(316_000, 4, 1, &b);
        assert_eq!(d.replicas, 2);
        assert_eq!(d.limit, Limit::TooFewReplicas);
    }

    #[test]
    fn scale_up_rate_is_limited_by_policies() {
        let b = defaults(1, 100);
        let mut s = ScalerState::default();
        // from 2, wish 50: max(2+4, ceil(2*2)) = 6
        let d = s.decide(0, 2, 50, &b);
        assert_eq!((d.replicas, d.limit), (6, Limit::ScaleUpLimit));
        s.record_scale(0, 2, 6, &b);
        // 5 s later, still inside the 15 s period: period start is 2 → limit 6
        let d = s.decide(5_000, 6, 50, &b);
        assert_eq!(d.replicas, 6);
        // after the period: from 6 → max(10, 12) = 12
        let d = s.decide(16_000, 6, 50, &b);
        assert_eq!(d.replicas, 12);
    }

    #[test]
    fn select_min_and_disabled() {
        let mut b = defaults(1, 100);
        b.up.select_policy = SelectPolicy::Min;
        let mut s = ScalerState::default();
        assert_eq!(s.decide(0, 10, 50, &b).replicas, 14); // min(10+4, 20)
        b.up.select_policy = SelectPolicy::Disabled;
        let mut s = ScalerState::default();
        assert_eq!(s.decide(0, 10, 50, &b).replicas, 10);
    }

    #[test]
    fn bounds_apply() {
        let b = defaults(2, 4);
        let mut s = ScalerState::default();
        assert_eq!(s.decide(0, 3, 9, &b).replicas, 4);
        assert_eq!(s.decide(0, 6, 6, &b).replicas, 4);
        assert_eq!(s.decide(0, 1, 1, &b).replicas, 2);
    }

    #[test]
    fn no_flapping_under_oscillating_metric() {
        // the metric alternates between wanting 3 and 5 every 5 s; with the
        // default down window the count only ever goes up
        let b = defaults(2, 10);
        let mut s = ScalerState::default();
        let mut cur = 3;
        let mut changes = Vec::new();
        for i in 0..100 {
            let want = if i % 2 == 0 { 5 } else { 3 };
            let d = s.decide(i * 5_000, cur, want, &b);
            if d.replicas != cur {
                s.record_scale(i * 5_000, cur, d.replicas, &b);
                changes.push((cur, d.replicas));
                cur = d.replicas;
            }
        }
        assert_eq!(changes, vec![(3, 5)]);
    }
}
