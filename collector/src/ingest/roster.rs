//! The roster of agents: which agents have streams open now, since when,
//! from where, with which version, and how their batches arrive (last
//! batch, its sequence, how long it waited on the agent's side).
//!
//! It is what `GET /api/v1/status/agents` and the web UI's overview show.
//! Entries live in memory only: after a collector restart an agent appears
//! again when it reconnects. The roster is bounded ([`MAX_AGENTS`]): past
//! it, the agent disconnected the longest is forgotten first.
//!
//! Not here: the durable sequences (those are `IngestCore`'s, persisted in
//! checkpoints), authentication, anything an agent's own metrics say (its
//! disk buffer, scrape durations: those are series in the store).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use parking_lot::Mutex;
use serde::Serialize;

/// Most agents remembered; the one disconnected the longest goes first.
pub const MAX_AGENTS: usize = 10_000;

/// What the roster knows about one agent.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    pub agent_id: String,
    pub node: String,
    pub version: String,
    /// The address its stream came from.
    pub peer: String,
    /// Streams open now (an agent normally has one; a reconnect may
    /// briefly overlap the old stream).
    pub streams: u32,
    /// When the newest stream opened (Unix ms).
    pub connected_at_ms: i64,
    /// When the last stream closed (Unix ms; 0 while one is open or never).
    pub disconnected_at_ms: i64,
    /// Why the last stream ended, empty when it closed cleanly.
    pub last_error: String,
    /// When the last batch arrived (Unix ms; 0: none since it connected).
    pub last_batch_at_ms: i64,
    pub last_batch_seq: u64,
    /// How long the last batch waited on the agent: arrival − the time the
    /// agent sealed it (ms; a large value means the agent is draining its
    /// disk buffer).
    pub last_batch_lag_ms: i64,
    /// Batches and samples received since the collector started.
    pub batches: u64,
    pub samples: u64,
    pub log_records: u64,
}

/// The roster (cheap to share behind the ingest core).
#[derive(Default)]
pub struct Roster {
    agents: Mutex<BTreeMap<String, AgentStatus>>,
}

impl Roster {
    /// An agent opened a stream (after its `Hello`).
    pub fn connected(
        &self,
        agent_id: &str,
        node: &str,
        version: &str,
        peer: Option<SocketAddr>,
        now_ms: i64,
    ) {
        let mut m = self.agents.lock();
        if !m.contains_key(agent_id) && m.len() >= MAX_AGENTS {
            evict_one(&mut m);
        }
        let a = m.entry(agent_id.to_string()).or_default();
        a.agent_id = agent_id.to_string();
        a.node = node.to_string();
        a.version = version.to_string();
        a.peer = peer.map(|p| p.to_string()).unwrap_or_default();
        a.streams += 1;
        a.connected_at_ms = now_ms;
        a.disconnected_at_ms = 0;
        a.last_error.clear();
    }

    /// A stream of the agent ended; `error` is empty for a clean close.
    pub fn disconnected(&self, agent_id: &str, error: &str, now_ms: i64) {
        if let Some(a) = self.agents.lock().get_mut(agent_id) {
            a.streams = a.streams.saturating_sub(1);
            if a.streams == 0 {
                a.disconnected_at_ms = now_ms;
            }
            a.last_error = error.to_string();
        }
    }

    /// A batch was made durable (or recognised as a duplicate).
    pub fn batch(
        &self,
        agent_id: &str,
        seq: u64,
        created_ms: i64,
        samples: u64,
        log_records: u64,
        now_ms: i64,
    ) {
        if let Some(a) = self.agents.lock().get_mut(agent_id) {
            a.last_batch_at_ms = now_ms;
            a.last_batch_seq = a.last_batch_seq.max(seq);
            a.last_batch_lag_ms = if created_ms > 0 {
                (now_ms - created_ms).max(0)
            } else {
                0
            };
            a.batches += 1;
            a.samples += samples;
            a.log_records += log_records;
        }
    }

    /// Every agent known, by agent id.
    pub fn list(&self) -> Vec<AgentStatus> {
        self.agents.lock().values().cloned().collect()
    }
}

/// Forgets the agent disconnected the longest (never one that is connected
/// unless all are).
fn evict_one(m: &mut BTreeMap<String, AgentStatus>) {
    let victim = m
        .values()
        .min_by_key(|a| (a.streams > 0, a.disconnected_at_ms, a.connected_at_ms))
        .map(|a| a.agent_id.clone());
    if let Some(id) = victim {
        m.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_streams_and_batches() {
        let r = Roster::default();
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        r.connected("a1", "node-1", "0.1.0", Some(peer), 1_000);
        r.batch("a1", 7, 1_500, 100, 3, 2_000);
        let a = &r.list()[0];
        assert_eq!(a.streams, 1);
        assert_eq!(a.peer, "127.0.0.1:5000");
        assert_eq!((a.last_batch_seq, a.last_batch_lag_ms), (7, 500));
        assert_eq!((a.batches, a.samples, a.log_records), (1, 100, 3));
        // a reconnect overlapping the old stream, then both close
        r.connected("a1", "node-1", "0.1.1", Some(peer), 3_000);
        r.disconnected("a1", "", 3_100);
        assert_eq!(r.list()[0].streams, 1);
        assert_eq!(r.list()[0].disconnected_at_ms, 0);
        r.disconnected("a1", "transport error", 4_000);
        let a = &r.list()[0];
        assert_eq!((a.streams, a.disconnected_at_ms), (0, 4_000));
        assert_eq!(a.last_error, "transport error");
        assert_eq!(a.version, "0.1.1");
        // batches of an unknown agent are ignored, not invented
        r.batch("ghost", 1, 0, 1, 0, 5_000);
        assert_eq!(r.list().len(), 1);
    }

    #[test]
    fn bounded_forgetting_the_longest_gone_first() {
        let r = Roster::default();
        for i in 0..MAX_AGENTS {
            r.connected(&format!("a{i}"), "n", "v", None, 1);
        }
        r.disconnected("a5", "", 10);
        r.disconnected("a6", "", 5);
        r.connected("new", "n", "v", None, 20);
        let ids: Vec<String> = r.list().into_iter().map(|a| a.agent_id).collect();
        assert_eq!(ids.len(), MAX_AGENTS);
        assert!(!ids.contains(&"a6".to_string()) && ids.contains(&"a5".to_string()));
        assert!(ids.contains(&"new".to_string()));
    }
}
