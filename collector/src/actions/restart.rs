//! When a restart may happen: a per-target cooldown, a most-restarts-per-window
//! after which the target is marked crash-looping and left alone, and a global
//! rate limit across all targets. Pure decisions over [`ActionState`], which
//! the audit store persists, so the limits hold across collector restarts.

use super::audit::ActionState;

/// Limits of one restart rule.
#[derive(Clone, Debug, PartialEq)]
pub struct RestartPolicy {
    /// No second restart of the same target within this time.
    pub cooldown_ms: i64,
    /// At most this many restarts of one target within `window_ms` …
    pub max_restarts: u32,
    pub window_ms: i64,
}

/// Global limit: at most `max` restarts across all targets per `per_ms`.
#[derive(Clone, Debug, PartialEq)]
pub struct GlobalLimit {
    pub max: u32,
    pub per_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Restart,
    /// The target was restarted less than a cooldown ago.
    Cooldown {
        remaining_ms: i64,
    },
    /// The target hit `max_restarts` in the window: vigil stops restarting it.
    CrashLooping {
        restarts: u32,
    },
    /// Too many restarts across all targets just now.
    RateLimited,
}

/// Decides for `key` at `now_ms`; on `Restart` the restart is recorded in
/// `state` (the caller persists it before carrying the restart out).
pub fn decide(
    state: &mut ActionState,
    key: &str,
    now_ms: i64,
    p: &RestartPolicy,
    global: &GlobalLimit,
) -> Verdict {
    if let Some(since) = state.crash_looping.get(key) {
        // a crash-looping mark lasts one window after it was set
        if now_ms - since < p.window_ms {
            let restarts = state.restarts.get(key).map(|v| v.len() as u32).unwrap_or(0);
            return Verdict::CrashLooping { restarts };
        }
        state.crash_looping.remove(key);
    }
    let history = state.restarts.entry(key.to_string()).or_default();
    history.retain(|t| now_ms - t < p.window_ms);
    if let Some(last) = history.last() {
        let since = now_ms - last;
        if since < p.cooldown_ms {
            return Verdict::Cooldown {
                remaining_ms: p.cooldown_ms - since,
            };
        }
    }
    if history.len() as u32 >= p.max_restarts {
        let restarts = history.len() as u32;
        state.crash_looping.insert(key.to_string(), now_ms);
        return Verdict::CrashLooping { restarts };
    }
    let recent_all: usize = state
        .restarts
        .values()
        .map(|v| v.iter().filter(|t| now_ms - **t < global.per_ms).count())
        .sum();
    if recent_all as u32 >= global.max {
        return Verdict::RateLimited;
    }
    state
        .restarts
        .entry(key.to_string())
        .or_default()
        .push(now_ms);
    Verdict::Restart
}

/// A restart of `key` decided at `decided_ms` was carried out at `done_ms`:
/// the cooldown counts from then, so a slow restart (a container that takes
/// its whole stop timeout) does not eat the restarted container's grace.
/// No change when the decision is no longer in the history.
pub fn finished(state: &mut ActionState, key: &str, decided_ms: i64, done_ms: i64) {
    if let Some(history) = state.restarts.get_mut(key)
        && let Some(t) = history.iter_mut().rev().find(|t| **t == decided_ms)
    {
        *t = done_ms.max(decided_ms);
        history.sort_unstable();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: RestartPolicy = RestartPolicy {
        cooldown_ms: 60_000,
        max_restarts: 3,
        window_ms: 3_600_000,
    };
    const G: GlobalLimit = GlobalLimit {
        max: 100,
        per_ms: 60_000,
    };

    #[test]
    fn cooldown_then_crash_looping() {
        let mut s = ActionState::default();
        assert_eq!(decide(&mut s, "a", 0, &P, &G), Verdict::Restart);
        assert_eq!(
            decide(&mut s, "a", 30_000, &P, &G),
            Verdict::Cooldown {
                remaining_ms: 30_000
            }
        );
        assert_eq!(decide(&mut s, "a", 60_000, &P, &G), Verdict::Restart);
        assert_eq!(decide(&mut s, "a", 120_000, &P, &G), Verdict::Restart);
        assert_eq!(
            decide(&mut s, "a", 180_000, &P, &G),
            Verdict::CrashLooping { restarts: 3 }
        );
        // stays crash-looping for the window, even after the cooldown
        assert!(matches!(
            decide(&mut s, "a", 600_000, &P, &G),
            Verdict::CrashLooping { .. }
        ));
        // other targets are unaffected
        assert_eq!(decide(&mut s, "b", 600_000, &P, &G), Verdict::Restart);
        // after the window the history is gone: restarts resume
        assert_eq!(
            decide(&mut s, "a", 180_000 + 3_600_000, &P, &G),
            Verdict::Restart
        );
    }

    #[test]
    fn global_rate_limit() {
        let g = GlobalLimit {
            max: 2,
            per_ms: 60_000,
        };
        let mut s = ActionState::default();
        assert_eq!(decide(&mut s, "a", 0, &P, &g), Verdict::Restart);
        assert_eq!(decide(&mut s, "b", 1, &P, &g), Verdict::Restart);
        assert_eq!(decide(&mut s, "c", 2, &P, &g), Verdict::RateLimited);
        assert_eq!(decide(&mut s, "c", 60_001, &P, &g), Verdict::Restart);
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut s = ActionState::default();
        decide(&mut s, "a", 0, &P, &G);
        let j = serde_json::to_string(&s).unwrap();
        let mut back: ActionState = serde_json::from_str(&j).unwrap();
        assert_eq!(
            decide(&mut back, "a", 1_000, &P, &G),
            Verdict::Cooldown {
                remaining_ms: 59_000
            }
        );
    }

    #[test]
    fn the_cooldown_counts_from_when_the_restart_finished() {
        let mut st = ActionState::default();
        assert_eq!(decide(&mut st, "k", 1_000, &P, &G), Verdict::Restart);
        // the restart took 10 s
        finished(&mut st, "k", 1_000, 11_000);
        assert_eq!(
            decide(&mut st, "k", 65_000, &P, &G),
            Verdict::Cooldown {
                remaining_ms: 6_000
            }
        );
        assert_eq!(decide(&mut st, "k", 71_000, &P, &G), Verdict::Restart);
        // an unknown decision changes nothing
        finished(&mut st, "k", 5, 999_999);
        assert_eq!(st.restarts["k"], vec![11_000, 71_000]);
    }
}
