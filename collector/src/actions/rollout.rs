//! Releases as data: which image each workload runs, and when that changes.
//! A workload is a Docker/Podman service — the containers sharing a
//! `vigil.service` label, else `com.docker.compose.service` (the agents ship
//! `vigil_container_info{service,image,container_id,name}` for every running
//! container). Each observation is the workload's running replicas per image;
//! [`observe`] turns a run of observations into a version history:
//!
//! - the first observation with a single image sets the **current** version
//!   (a baseline: nothing is reported);
//! - another image appearing starts a **rollout** (old = current, new = it),
//!   `progressing`;
//! - only the new image left: the rollout is `complete`, the new image is
//!   current and the old one is kept as **previous** (what a rollback goes
//!   back to);
//! - only the old image left: the rollout is `reverted` (by a person or by
//!   vigil's rollback); current stays the old image;
//! - a third image while progressing supersedes the rollout (old stays the
//!   last stable version).
//!
//! No replicas at all says nothing (missing data is never a change). Pure:
//! the engine feeds it and persists [`WorkloadVersions`] in the action state.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where a rollout is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    Progressing,
    Complete,
    Reverted,
}

impl RolloutState {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Progressing => "progressing",
            RolloutState::Complete => "complete",
            RolloutState::Reverted => "reverted",
        }
    }
}

/// One change of image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    pub old_image: String,
    pub new_image: String,
    pub started_ms: i64,
    pub state: RolloutState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<i64>,
}

/// A workload's versions (persisted).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadVersions {
    /// The stable image.
    pub current: Option<String>,
    /// The image before `current` (where a rollback goes).
    pub previous: Option<String>,
    /// The last rollout, finished or not.
    pub rollout: Option<Rollout>,
    /// Replicas per image at the last observation.
    #[serde(default)]
    pub replicas: BTreeMap<String, u32>,
}

impl WorkloadVersions {
    /// The rollout in progress, if any.
    pub fn progressing(&self) -> Option<&Rollout> {
        self.rollout
            .as_ref()
            .filter(|r| r.state == RolloutState::Progressing)
    }
}

/// What an observation changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    None,
    Baseline {
        image: String,
    },
    Started {
        old: String,
        new: String,
    },
    Completed {
        old: String,
        new: String,
    },
    Reverted {
        old: String,
        new: String,
    },
    Superseded {
        old: String,
        abandoned: String,
        new: String,
    },
}

/// The image with the most replicas among those `keep` allows (ties: by name).
fn largest(images: &BTreeMap<String, u32>, keep: impl Fn(&str) -> bool) -> Option<&str> {
    images
        .iter()
        .filter(|(i, n)| **n > 0 && keep(i))
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(i, _)| i.as_str())
}

/// Takes one observation (running replicas per image) at `now_ms`.
pub fn observe(v: &mut WorkloadVersions, images: &BTreeMap<String, u32>, now_ms: i64) -> Change {
    let images: BTreeMap<String, u32> = images
        .iter()
        .filter(|(i, n)| **n > 0 && !i.is_empty())
        .map(|(i, n)| (i.clone(), *n))
        .collect();
    if images.is_empty() {
        return Change::None;
    }
    v.replicas.clone_from(&images);
    let only = |i: &str| images.len() == 1 && images.contains_key(i);
    let Some(current) = v.current.clone() else {
        if images.len() == 1 {
            let image = images.keys().next().cloned().unwrap_or_default();
            v.current = Some(image.clone());
            return Change::Baseline { image };
        }
        return Change::None;
    };
    if let Some(r) = v.progressing().cloned() {
        if only(&r.new_image) {
            v.previous = Some(r.old_image.clone());
            v.current = Some(r.new_image.clone());
            if let Some(x) = v.rollout.as_mut() {
                x.state = RolloutState::Complete;
                x.ended_ms = Some(now_ms);
            }
            return Change::Completed {
                old: r.old_image,
                new: r.new_image,
            };
        }
        if only(&r.old_image) {
            if let Some(x) = v.rollout.as_mut() {
                x.state = RolloutState::Reverted;
                x.ended_ms = Some(now_ms);
            }
            return Change::Reverted {
                old: r.old_image,
                new: r.new_image,
            };
        }
        if let Some(third) = largest(&images, |i| i != r.old_image && i != r.new_image) {
            let third = third.to_string();
            v.rollout = Some(Rollout {
                old_image: r.old_image.clone(),
                new_image: third.clone(),
                started_ms: now_ms,
                state: RolloutState::Progressing,
                ended_ms: None,
            });
            return Change::Superseded {
                old: r.old_image,
                abandoned: r.new_image,
                new: third,
            };
        }
        return Change::None;
    }
    let Some(new) = largest(&images, |i| i != current) else {
        return Change::None;
    };
    let new = new.to_string();
    v.rollout = Some(Rollout {
        old_image: current.clone(),
        new_image: new.clone(),
        started_ms: now_ms,
        state: RolloutState::Progressing,
        ended_ms: None,
    });
    Change::Started { old: current, new }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(kv: &[(&str, u32)]) -> BTreeMap<String, u32> {
        kv.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn a_rolling_update_from_start_to_end() {
        let mut v = WorkloadVersions::default();
        assert_eq!(observe(&mut v, &obs(&[]), 0), Change::None);
        assert_eq!(
            observe(&mut v, &obs(&[("web:1", 2)]), 1),
            Change::Baseline {
                image: "web:1".into()
            }
        );
        assert_eq!(observe(&mut v, &obs(&[("web:1", 2)]), 2), Change::None);
        assert_eq!(
            observe(&mut v, &obs(&[("web:1", 2), ("web:2", 1)]), 3),
            Change::Started {
                old: "web:1".into(),
                new: "web:2".into()
            }
        );
        assert_eq!(v.progressing().unwrap().started_ms, 3);
        assert_eq!(
            observe(&mut v, &obs(&[("web:1", 1), ("web:2", 1)]), 4),
            Change::None
        );
        // a scrape gap: nothing changes
        assert_eq!(observe(&mut v, &obs(&[]), 5), Change::None);
        assert_eq!(
            observe(&mut v, &obs(&[("web:2", 2)]), 6),
            Change::Completed {
                old: "web:1".into(),
                new: "web:2".into()
            }
        );
        assert_eq!(v.current.as_deref(), Some("web:2"));
        assert_eq!(v.previous.as_deref(), Some("web:1"));
        assert_eq!(v.rollout.as_ref().unwrap().ended_ms, Some(6));
        assert_eq!(observe(&mut v, &obs(&[("web:2", 2)]), 7), Change::None);
    }

    #[test]
    fn reverted_and_superseded() {
        let mut v = WorkloadVersions::default();
        observe(&mut v, &obs(&[("a", 2)]), 1);
        observe(&mut v, &obs(&[("a", 2), ("b", 1)]), 2);
        assert_eq!(
            observe(&mut v, &obs(&[("a", 1), ("c", 1)]), 3),
            Change::Superseded {
                old: "a".into(),
                abandoned: "b".into(),
                new: "c".into()
            }
        );
        assert_eq!(
            observe(&mut v, &obs(&[("a", 2)]), 4),
            Change::Reverted {
                old: "a".into(),
                new: "c".into()
            }
        );
        assert_eq!(v.current.as_deref(), Some("a"));
        assert_eq!(v.previous, None, "a revert keeps the history as it was");
        // a new rollout after the revert
        assert!(matches!(
            observe(&mut v, &obs(&[("a", 1), ("d", 1)]), 5),
            Change::Started { .. }
        ));
    }

    #[test]
    fn no_baseline_from_a_mixed_start() {
        let mut v = WorkloadVersions::default();
        assert_eq!(
            observe(&mut v, &obs(&[("a", 1), ("b", 1)]), 1),
            Change::None
        );
        assert_eq!(v.current, None);
        // an instant switch (old gone between two looks) is started, then complete
        observe(&mut v, &obs(&[("a", 2)]), 2);
        assert!(matches!(
            observe(&mut v, &obs(&[("b", 2)]), 3),
            Change::Started { .. }
        ));
        assert!(matches!(
            observe(&mut v, &obs(&[("b", 2)]), 4),
            Change::Completed { .. }
        ));
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut v = WorkloadVersions::default();
        observe(&mut v, &obs(&[("a", 2)]), 1);
        observe(&mut v, &obs(&[("a", 2), ("b", 1)]), 2);
        let back: WorkloadVersions =
            serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
        assert_eq!(back, v);
    }
}
