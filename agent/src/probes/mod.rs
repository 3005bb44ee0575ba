//! Health probes for Docker/Podman containers, declared by container labels
//! ([`spec`]: `vigil.probe.<liveness|readiness>.…`, Kubernetes's fields and
//! defaults), run by the agent on its node ([`check`]: HTTP, TCP or a command;
//! inside the container's network namespace when it has no routable address),
//! judged with the kubelet's thresholds ([`state`]).
//!
//! Discovery asks the Engine API sockets (the same ones container scraping
//! asks) every refresh; each probe of each container runs in its own task on
//! its own period, from the container's start (its `StartedAt`: a restarted
//! container starts over, initial delay included). Containers run by
//! Kubernetes are left to the kubelet.
//!
//! Every result is shipped at once as series — `vigil_probe_success` (the
//! last result), `vigil_probe_passing` (thresholded: live, or ready),
//! `vigil_probe_runs_total`, `vigil_probe_failures_total`,
//! `vigil_probe_duration_seconds`, labelled `probe`, `container_id`, `name`,
//! `image`, `service` — and a threshold crossing as an event: `probe_failed`
//! (each time the consecutive failures reach a multiple of the failure
//! threshold) or `probe_recovered`, whose subject carries the same labels. A
//! restart rule matching `{event: probe_failed, probe: liveness}` restarts the
//! container (cooldown and crash-loop guard as for OOM kills). Labels with a
//! mistake give one `probe_invalid` event per container start, and no probe.
//! When a container goes away its probe series get staleness markers.

pub mod check;
pub mod spec;
pub mod state;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::model::{Event, MetricFamily, MetricKind, Scrape};
use crate::ship::ShipHandle;
use crate::targets::discovery::engine::Summary;
use crate::targets::fetch::{Client, Dial};
use check::{ExecVia, Reach};
use spec::{PREFIX, ProbeSpec};
use state::{ProbeState, Transition};

const API_TIMEOUT: Duration = Duration::from_secs(10);
const API_LIMIT: u64 = 64 << 20;

/// The labels that name a container's service, first found wins.
pub const SERVICE_LABELS: [&str; 2] = ["vigil.service", "com.docker.compose.service"];

/// The service a container belongs to by its labels ("" for none).
pub fn service_of(labels: &BTreeMap<String, String>) -> String {
    SERVICE_LABELS
        .iter()
        .find_map(|k| labels.get(*k).filter(|v| !v.is_empty()))
        .cloned()
        .unwrap_or_default()
}

#[derive(Debug, Deserialize)]
struct Inspect {
    #[serde(rename = "State")]
    state: InspectState,
}

#[derive(Debug, Deserialize)]
struct InspectState {
    #[serde(rename = "Pid", default)]
    pid: i64,
    #[serde(rename = "StartedAt", default)]
    started_at: String,
}

/// One container's probes as last discovered.
#[derive(Clone, Debug, PartialEq)]
struct Wanted {
    started_at: String,
    probes: Vec<ProbeSpec>,
    errors: Vec<String>,
    reach: Option<Reach>,
    /// `container_id`, `name`, `image`, `service`.
    identity: Vec<(String, String)>,
    socket: PathBuf,
}

struct Running {
    wanted: Wanted,
    stop: CancellationToken,
}

/// Runs probe discovery and the probes until `shutdown`.
pub async fn run(
    sockets: Vec<PathBuf>,
    host_root: PathBuf,
    refresh: Duration,
    probes_on: bool,
    ship: ShipHandle,
    shutdown: CancellationToken,
) {
    let mut clients: Vec<(PathBuf, Client)> = sockets
        .into_iter()
        .map(|p| (p.clone(), Client::new(Dial::Unix(p), None)))
        .collect();
    let mut running: HashMap<String, Running> = HashMap::new();
    let mut info_before: Vec<Vec<(String, String)>> = Vec::new();
    loop {
        let mut wanted: HashMap<String, Wanted> = HashMap::new();
        let mut info = Vec::new();
        let mut complete = true;
        for (path, client) in &mut clients {
            if !path.exists() {
                continue;
            }
            match discover(path, client, &host_root, &mut info).await {
                Ok(w) => wanted.extend(w),
                Err(e) => {
                    complete = false;
                    tracing::debug!(error = %e, "probe discovery");
                }
            }
        }
        if !probes_on {
            wanted.clear();
        }
        for (id, w) in &wanted {
            if running.get(id).is_some_and(|r| r.wanted == *w) {
                continue;
            }
            if let Some(old) = running.remove(id) {
                old.stop.cancel();
            }
            let stop = shutdown.child_token();
            for e in &w.errors {
                tracing::warn!(container = %id, error = %e, "probe labels not understood; probe not run");
            }
            if !w.errors.is_empty() {
                let mut s = Scrape::new(vigil_common::time::now_ms());
                s.events.push(Event {
                    timestamp_ms: s.timestamp_ms,
                    kind: "probe_invalid".into(),
                    subject: w.identity.clone(),
                    attributes: vec![("error".into(), w.errors.join("; "))],
                });
                ship.submit_scrape(s);
            }
            for p in &w.probes {
                tokio::spawn(probe_loop(
                    p.clone(),
                    w.clone(),
                    ship.clone(),
                    stop.clone(),
                    shutdown.clone(),
                ));
            }
            running.insert(
                id.clone(),
                Running {
                    wanted: w.clone(),
                    stop,
                },
            );
        }
        if probes_on || !info.is_empty() || !info_before.is_empty() {
            let s = container_info(&info, &info_before, complete);
            if !s.families.is_empty() {
                ship.submit_scrape(s);
            }
            if complete {
                info_before = info;
            } else {
                info_before.extend(info);
                info_before.sort();
                info_before.dedup();
            }
        }
        // a socket that did not answer keeps its containers' probes running
        if complete {
            running.retain(|id, r| {
                let keep = wanted.contains_key(id);
                if !keep {
                    r.stop.cancel();
                }
                keep
            });
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(refresh) => {}
        }
    }
}

/// The probed containers behind one Engine API socket.
async fn discover(
    socket: &Path,
    client: &mut Client,
    host_root: &Path,
    info: &mut Vec<Vec<(String, String)>>,
) -> Result<HashMap<String, Wanted>, String> {
    let url = format!("unix://{}/containers/json", socket.display());
    let accept = [("accept", "application/json")];
    let r = client
        .get(&url, "/containers/json", &accept, API_LIMIT, API_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    let list: Vec<Summary> = serde_json::from_slice(&r.body)
        .map_err(|e| format!("{url}: unreadable container list: {e}"))?;
    let mut out = HashMap::new();
    for c in list {
        let labels = c.labels.clone().unwrap_or_default();
        if labels.contains_key("io.kubernetes.pod.name") {
            continue;
        }
        let name = c
            .names
            .first()
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_default();
        let identity = vec![
            ("container_id".to_string(), c.id.clone()),
            ("image".to_string(), c.image.clone().unwrap_or_default()),
            ("name".to_string(), name),
            ("service".to_string(), service_of(&labels)),
        ];
        info.push(identity.clone());
        if !labels.keys().any(|k| k.starts_with(PREFIX)) {
            continue;
        }
        let path = format!("/containers/{}/json", c.id);
        let inspect = match client
            .get(&url, &path, &accept, API_LIMIT, API_TIMEOUT)
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| serde_json::from_slice::<Inspect>(&r.body).map_err(|e| e.to_string()))
        {
            Ok(i) => i,
            Err(e) => {
                tracing::debug!(container = %c.id, error = %e, "inspect for probes");
                continue;
            }
        };
        let (probes, errors) = spec::parse(&labels);
        let reach = match crate::targets::discovery::engine::container_ip(&c)
            .and_then(|(_, ip)| ip.parse::<IpAddr>().ok())
        {
            Some(ip) => Some(Reach::Ip(ip)),
            None if inspect.state.pid > 0 => Some(Reach::NetNs(
                host_root.join(format!("proc/{}/ns/net", inspect.state.pid)),
            )),
            None => None,
        };
        out.insert(
            c.id.clone(),
            Wanted {
                started_at: inspect.state.started_at,
                probes,
                errors,
                reach,
                identity,
                socket: socket.to_path_buf(),
            },
        );
    }
    Ok(out)
}

/// `vigil_container_info` of the containers listed now, and staleness
/// markers for those listed before and gone (only when every socket
/// answered: a socket that did not says nothing about its containers).
fn container_info(
    now: &[Vec<(String, String)>],
    before: &[Vec<(String, String)>],
    complete: bool,
) -> Scrape {
    let mut s = Scrape::new(vigil_common::time::now_ms());
    let mut f = MetricFamily::new(
        "vigil_container_info",
        "A running Docker/Podman container with its image and service (label vigil.service, else com.docker.compose.service)",
        MetricKind::Gauge,
    );
    for l in now {
        f.push(l.iter().cloned(), 1.0);
    }
    if complete {
        let stale = f64::from_bits(vigil_common::exposition::STALE_NAN);
        for l in before.iter().filter(|l| !now.contains(l)) {
            f.push(l.iter().cloned(), stale);
        }
    }
    if !f.samples.is_empty() {
        s.families.push(f);
    }
    s
}

/// The series of one probe's result.
fn families(labels: &[(String, String)], st: &ProbeState, ok: f64, secs: f64) -> Vec<MetricFamily> {
    let mut out = Vec::with_capacity(5);
    let mut f = |name: &str, help: &str, kind: MetricKind, v: f64| {
        let mut fam = MetricFamily::new(name, help, kind);
        fam.push(labels.iter().cloned(), v);
        out.push(fam);
    };
    f(
        "vigil_probe_success",
        "Whether the probe's last run passed (1) or failed (0)",
        MetricKind::Gauge,
        ok,
    );
    f(
        "vigil_probe_passing",
        "Whether the probe passes after its thresholds: live (liveness) or ready (readiness)",
        MetricKind::Gauge,
        if ok.is_nan() {
            ok
        } else if st.passing {
            1.0
        } else {
            0.0
        },
    );
    f(
        "vigil_probe_runs_total",
        "Probe runs since the agent started probing the container",
        MetricKind::Counter,
        if ok.is_nan() {
            ok
        } else {
            st.runs_total as f64
        },
    );
    f(
        "vigil_probe_failures_total",
        "Failed probe runs since the agent started probing the container",
        MetricKind::Counter,
        if ok.is_nan() {
            ok
        } else {
            st.failures_total as f64
        },
    );
    f(
        "vigil_probe_duration_seconds",
        "How long the probe's last run took",
        MetricKind::Gauge,
        secs,
    );
    out
}

/// Runs one probe of one container until `stop`.
async fn probe_loop(
    p: ProbeSpec,
    w: Wanted,
    ship: ShipHandle,
    stop: CancellationToken,
    shutdown: CancellationToken,
) {
    let mut labels = w.identity.clone();
    labels.push(("probe".into(), p.kind.as_str().into()));
    labels.sort();
    let exec = ExecVia {
        socket: w.socket.clone(),
        container_id: w
            .identity
            .iter()
            .find(|(k, _)| k == "container_id")
            .map(|(_, v)| v.clone())
            .unwrap_or_default(),
    };
    let mut st = ProbeState::new(p.kind);
    let mut shipped = false;
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(p.initial_delay) => {
            let mut tick = tokio::time::interval(p.period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let t0 = Instant::now();
                let r = match (&w.reach, &p.handler) {
                    (_, spec::Handler::Exec { .. }) | (Some(_), _) => {
                        let reach = w.reach.clone().unwrap_or(Reach::Ip(IpAddr::from([127, 0, 0, 1])));
                        check::run(&p.handler, &reach, &exec, p.timeout).await
                    }
                    (None, _) => Err("the container has no address and no process to probe from".into()),
                };
                let secs = t0.elapsed().as_secs_f64();
                let t = st.record(r.is_ok(), p.success_threshold, p.failure_threshold);
                let mut s = Scrape::new(vigil_common::time::now_ms());
                s.families = families(&labels, &st, if r.is_ok() { 1.0 } else { 0.0 }, secs);
                let kind = match t {
                    Transition::None => None,
                    Transition::Failed { .. } => Some("probe_failed"),
                    Transition::Recovered => Some("probe_recovered"),
                };
                if let Some(kind) = kind {
                    let mut attributes = vec![
                        ("type".to_string(), p.handler.type_name().to_string()),
                        ("consecutive".to_string(), st.run.to_string()),
                        ("threshold".to_string(), p.failure_threshold.to_string()),
                    ];
                    if let Err(e) = &r {
                        attributes.push(("error".into(), e.clone()));
                    }
                    tracing::info!(container = ?w.identity, probe = p.kind.as_str(), event = kind, error = ?r.as_ref().err(), "probe threshold crossed");
                    s.events.push(Event {
                        timestamp_ms: s.timestamp_ms,
                        kind: kind.into(),
                        subject: labels.clone(),
                        attributes,
                    });
                }
                ship.submit_scrape(s);
                shipped = true;
            }
        }
    }
    // the container went away or changed: its series end here (not at an
    // agent shutdown: they are still true then)
    if shipped && !shutdown.is_cancelled() {
        let stale = f64::from_bits(vigil_common::exposition::STALE_NAN);
        let mut s = Scrape::new(vigil_common::time::now_ms());
        s.families = families(&labels, &st, stale, stale);
        ship.submit_scrape(s);
    }
}

#[cfg(test)]
mod tests {
    use super::spec::ProbeKind;
    use super::*;

    #[test]
    fn service_label_order() {
        let mut l = BTreeMap::new();
        assert_eq!(service_of(&l), "");
        l.insert("com.docker.compose.service".to_string(), "web".to_string());
        assert_eq!(service_of(&l), "web");
        l.insert("vigil.service".to_string(), "api".to_string());
        assert_eq!(service_of(&l), "api");
    }

    #[test]
    fn container_info_marks_gone_containers_stale() {
        let a = vec![("container_id".to_string(), "a".to_string())];
        let b = vec![("container_id".to_string(), "b".to_string())];
        let s = container_info(std::slice::from_ref(&b), &[a.clone(), b.clone()], true);
        let f = &s.families[0];
        assert_eq!(f.samples.len(), 2);
        assert_eq!(f.samples[0].value, 1.0);
        assert_eq!(
            f.samples[1].value.to_bits(),
            vigil_common::exposition::STALE_NAN
        );
        // a socket did not answer: nothing is declared gone
        let s = container_info(std::slice::from_ref(&b), &[a, b.clone()], false);
        assert_eq!(s.families[0].samples.len(), 1);
    }

    #[test]
    fn stale_markers_cover_every_series() {
        let st = ProbeState::new(ProbeKind::Liveness);
        let labels = vec![("probe".to_string(), "liveness".to_string())];
        let stale = f64::from_bits(vigil_common::exposition::STALE_NAN);
        let f = families(&labels, &st, stale, stale);
        assert_eq!(f.len(), 5);
        assert!(
            f.iter()
                .all(|f| f.samples[0].value.to_bits() == vigil_common::exposition::STALE_NAN)
        );
        let f = families(&labels, &st, 1.0, 0.25);
        assert_eq!(f[1].samples[0].value, 1.0, "liveness starts passing");
    }
}
