//! Application scraping: the workloads of this node discovered ([`discovery`]),
//! made into targets ([`target`], Prometheus's relabeling), each scraped by
//! its own task on its own interval ([`fetch`], [`netns`]) with Prometheus's
//! semantics ([`append`]), the samples shipped in the agent's exactly-once
//! batches, and the targets' state served at `/api/v1/targets` ([`api`]).
//!
//! Lifecycle of a target: discovery sends its source's groups whenever they
//! change; [`run`] recomputes every job's targets and starts a scrape task
//! for each new one and stops the task of each one gone. A task spreads its
//! scrapes over the interval (offset by its identity), never waits for
//! another target, and hands each scrape's samples to the shipper without
//! waiting. A target that goes away gets staleness markers for all its
//! series two intervals later (as Prometheus), unless a target with the same
//! labels came back meanwhile; at agent shutdown none are written.

pub mod api;
pub mod append;
pub mod config;
pub mod discovery;
pub mod fetch;
pub mod metrics;
pub mod netns;
pub mod target;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::{Mutex, RwLock};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use vigil_common::Labels;
use vigil_common::exposition::{ACCEPT, Format};
use vigil_common::time::now_ms;

use crate::ship::ShipHandle;
use append::{AppendConfig, Appender};
use config::Job;
use discovery::{Context, TargetGroup, Update};
use fetch::{Client, Dial, Tls};
use metrics::TargetMetrics;
use target::{Drop, TargetSpec, populate};

/// Most dropped targets listed by the API (the rest are counted).
const MAX_DROPPED: usize = 1000;

/// A target's health as the API shows it.
#[derive(Debug, Clone)]
pub struct Health {
    pub health: &'static str,
    pub last_error: String,
    pub last_scrape: Option<SystemTime>,
    pub last_duration: f64,
}

/// An active target and its state.
pub struct TargetStatus {
    pub spec: TargetSpec,
    pub health: Mutex<Health>,
}

/// A discovered target that is not scraped, and why.
#[derive(Debug, Clone)]
pub struct DroppedTarget {
    pub job: String,
    pub discovered: Labels,
    pub reason: Option<String>,
}

/// What the API reads: the current targets.
#[derive(Default)]
pub struct Registry {
    pub active: RwLock<Vec<Arc<TargetStatus>>>,
    pub dropped: RwLock<Vec<DroppedTarget>>,
    /// Dropped targets beyond [`MAX_DROPPED`], not listed.
    pub dropped_unlisted: std::sync::atomic::AtomicU64,
}

struct Running {
    status: Arc<TargetStatus>,
    stop: CancellationToken,
}

/// Identity of what a target's series carry: job and public labels.
fn public_key(spec: &TargetSpec) -> u64 {
    spec.public_labels().stable_hash() ^ xxhash_rust::xxh3::xxh3_64(spec.job.as_bytes())
}

/// Runs discovery and scraping until `shutdown`.
pub async fn run(
    jobs: Vec<Job>,
    ctx: Context,
    ship: ShipHandle,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) {
    let jobs: Vec<Arc<Job>> = jobs.into_iter().map(Arc::new).collect();
    let (tx, mut rx) = mpsc::channel::<Update>(64);
    for (ji, job) in jobs.iter().enumerate() {
        for (si, src) in job.sources.iter().enumerate() {
            discovery::spawn(
                ji,
                si,
                src.clone(),
                ctx.clone(),
                tx.clone(),
                shutdown.clone(),
            );
        }
    }
    drop(tx);
    let mut groups: HashMap<(usize, usize), Vec<TargetGroup>> = HashMap::new();
    let mut running: HashMap<u64, Running> = HashMap::new();
    let live: Arc<Mutex<HashSet<u64>>> = Arc::default();
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => break,
            u = rx.recv() => match u {
                Some(u) => u,
                None => {
                    // every source ended (only static ones, or none): keep
                    // the targets until shutdown
                    shutdown.cancelled().await;
                    break;
                }
            },
        };
        groups.insert((first.job, first.source), first.groups);
        while let Ok(u) = rx.try_recv() {
            groups.insert((u.job, u.source), u.groups);
        }
        let mut want: BTreeMap<u64, TargetSpec> = BTreeMap::new();
        let mut dropped = Vec::new();
        let mut counts: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for (ji, job) in jobs.iter().enumerate() {
            let c = counts.entry(job.name.clone()).or_default();
            for si in 0..job.sources.len() {
                for g in groups.get(&(ji, si)).into_iter().flatten() {
                    for t in g.expand() {
                        let t = with_node(t, &ctx.node);
                        match populate(t, job) {
                            Ok(spec) => {
                                if want.insert(spec.key(), spec).is_none() {
                                    c.0 += 1;
                                }
                            }
                            Err((why, discovered)) => {
                                c.1 += 1;
                                let reason = match why {
                                    Drop::Relabeled => None,
                                    Drop::Invalid(m) => {
                                        tracing::debug!(job = %job.name, error = %m, "invalid target dropped");
                                        Some(m)
                                    }
                                };
                                dropped.push(DroppedTarget {
                                    job: job.name.clone(),
                                    discovered,
                                    reason,
                                });
                            }
                        }
                    }
                }
            }
        }
        *live.lock() = want.values().map(public_key).collect();
        running.retain(|k, r| {
            let keep = want.contains_key(k);
            if !keep {
                r.stop.cancel();
            }
            keep
        });
        for (k, spec) in want {
            if running.contains_key(&k) {
                continue;
            }
            let Some(job) = jobs.iter().find(|j| j.name == spec.job).cloned() else {
                continue;
            };
            let status = Arc::new(TargetStatus {
                spec,
                health: Mutex::new(Health {
                    health: "unknown",
                    last_error: String::new(),
                    last_scrape: None,
                    last_duration: 0.0,
                }),
            });
            let stop = CancellationToken::new();
            tokio::spawn(scrape_loop(
                job,
                status.clone(),
                ship.clone(),
                ctx.metrics.clone(),
                stop.clone(),
                shutdown.clone(),
                live.clone(),
            ));
            running.insert(k, Running { status, stop });
        }
        let mut active: Vec<Arc<TargetStatus>> =
            running.values().map(|r| r.status.clone()).collect();
        active.sort_by(|a, b| {
            (a.spec.job.as_str(), &a.spec.labels).cmp(&(b.spec.job.as_str(), &b.spec.labels))
        });
        *registry.active.write() = active;
        let extra = dropped.len().saturating_sub(MAX_DROPPED);
        dropped.truncate(MAX_DROPPED);
        registry
            .dropped_unlisted
            .store(extra as u64, std::sync::atomic::Ordering::Relaxed);
        *registry.dropped.write() = dropped;
        ctx.metrics.set_targets(&counts);
    }
    for r in running.values() {
        r.stop.cancel();
    }
}

/// Adds `node` unless discovery or a static config set it.
fn with_node(t: Labels, node: &str) -> Labels {
    if t.get("node").is_some_and(|n| !n.is_empty()) {
        return t;
    }
    let mut v = t.into_pairs();
    v.push(("node".to_string(), node.to_string()));
    Labels::new(v)
}

/// How to reach a target: the dial, TLS and the request path from its URL.
fn endpoint(spec: &TargetSpec, job: &Job) -> Result<(Dial, Option<Tls>, String), String> {
    let uri: http::Uri = spec
        .url
        .parse()
        .map_err(|e| format!("invalid scrape URL {:?}: {e}", spec.url))?;
    let host = uri.host().unwrap_or("").to_string();
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let pq = uri
        .path_and_query()
        .map_or("/".to_string(), |p| p.as_str().to_string());
    let tls = if https {
        let t = job.tls.clone().unwrap_or_default();
        Some(Tls::new(
            &host,
            t.ca_file.as_deref(),
            t.server_name.as_deref(),
            t.insecure_skip_verify,
        )?)
    } else {
        None
    };
    let dial = match &spec.netns {
        Some(ns) => {
            let h = host.trim_matches(|c| c == '[' || c == ']');
            let ip: std::net::IpAddr = h.parse().map_err(|_| {
                format!("{h:?} is not an IP address: inside a network namespace only addresses can be reached")
            })?;
            Dial::NetNs {
                netns: ns.clone(),
                addr: std::net::SocketAddr::new(ip, port),
            }
        }
        None => Dial::Tcp { host, port },
    };
    Ok((dial, tls, pq))
}

async fn scrape_loop(
    job: Arc<Job>,
    status: Arc<TargetStatus>,
    ship: ShipHandle,
    metrics: Arc<TargetMetrics>,
    stop: CancellationToken,
    shutdown: CancellationToken,
    live: Arc<Mutex<HashSet<u64>>>,
) {
    let spec = &status.spec;
    let mut app = Appender::new(AppendConfig {
        target_labels: spec.public_labels(),
        honor_labels: job.honor_labels,
        honor_timestamps: job.honor_timestamps,
        limits: job.limits,
        metric_relabel: job.metric_relabel.clone(),
    });
    let endpoint = endpoint(spec, &job);
    let mut client = endpoint
        .as_ref()
        .ok()
        .map(|(d, t, _)| Client::new(d.clone(), t.clone()));
    let timeout_s = spec.timeout.as_secs_f64().to_string();
    let ua = format!("vigil-agent/{}", crate::VERSION);
    let headers = [
        ("accept", ACCEPT),
        ("accept-encoding", "gzip"),
        ("user-agent", ua.as_str()),
        ("x-prometheus-scrape-timeout-seconds", timeout_s.as_str()),
    ];
    let interval = spec.interval;
    let offset = Duration::from_nanos(spec.key() % (interval.as_nanos().max(1) as u64));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut up = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let ts = now_ms();
        let t0 = Instant::now();
        let fetched = match (&mut client, &endpoint) {
            (Some(c), Ok((_, _, pq))) => c
                .get(&spec.url, pq, &headers, job.body_size_limit, spec.timeout)
                .await
                .map_err(|e| e.to_string()),
            (_, Err(e)) => Err(e.clone()),
            (None, Ok(_)) => Err("no client".to_string()),
        };
        let fetch_s = t0.elapsed().as_secs_f64();
        let outcome = match &fetched {
            Ok(r) => app.append(
                Ok((&r.body, Format::from_content_type(&r.content_type))),
                ts,
                now_ms(),
                fetch_s,
            ),
            Err(e) => app.append(Err(e.clone()), ts, now_ms(), fetch_s),
        };
        let took = t0.elapsed().as_secs_f64();
        metrics.scraped(
            &spec.job,
            up,
            &metrics::Scraped {
                error: outcome.error.as_deref(),
                samples: outcome.post_relabel,
                out_of_order: outcome.dropped_out_of_order,
                stale: outcome.stale_markers,
                duration_s: took,
            },
        );
        up = outcome.error.is_none();
        {
            let mut h = status.health.lock();
            h.health = if up { "up" } else { "down" };
            h.last_error = outcome.error.clone().unwrap_or_default();
            h.last_scrape = Some(SystemTime::now() - Duration::from_secs_f64(took));
            h.last_duration = took;
        }
        if let Some(e) = &outcome.error {
            tracing::debug!(target = %spec.url, error = %e, "scrape failed");
        }
        metrics
            .submitted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ship.submit_target(outcome.scrape);
    }
    if shutdown.is_cancelled() {
        return;
    }
    // The target went away. As Prometheus: wait for the next two scrapes
    // that would have been (and 10% more), then mark everything stale —
    // unless a target with the same labels is back.
    let mut stale_ts = None;
    for _ in 0..2 {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => { stale_ts.get_or_insert_with(now_ms); }
        }
    }
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = tokio::time::sleep(interval / 10) => {}
    }
    if live.lock().contains(&public_key(spec)) {
        return;
    }
    let gone = app.stale_all(stale_ts.unwrap_or_else(now_ms));
    metrics.gone(&spec.job, up, gone.samples.len());
    ship.submit_target(gone);
}
