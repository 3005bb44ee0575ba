//! Wires the collector together: recover (checkpoint + WAL replay), then
//! serve gRPC ingest (agents, OTLP) and HTTP (APIs, pushes), checkpoint periodically, trim retention, and
//! stop gracefully. [`start`] takes bound listeners and a shutdown token so
//! tests and benchmarks run a whole collector in-process on port 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::http::AppState;
use crate::ingest::checkpoint;
use crate::ingest::core::IngestCore;
use crate::ingest::service::IngestService;
use crate::metadata::Metadata;
use crate::store::{Store, StoreOptions};
use crate::telemetry::Telemetry;
use crate::wal::Wal;

/// Checkpoint at least this often …
const CHECKPOINT_EVERY: Duration = Duration::from_secs(300);
/// … and whenever the WAL grows past this.
const CHECKPOINT_WAL_BYTES: u64 = 512 << 20;

/// A running collector.
pub struct Running {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub state: AppState,
    pub core: Arc<IngestCore>,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    data_dir: PathBuf,
    shutdown_timeout: Duration,
}

impl Running {
    /// Stops accepting, lets in-flight batches finish, writes a final
    /// checkpoint.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let wait = futures::future::join_all(self.tasks);
        if tokio::time::timeout(self.shutdown_timeout, wait)
            .await
            .is_err()
        {
            tracing::warn!("servers did not stop within {:?}", self.shutdown_timeout);
        }
        checkpoint::write(&self.core, &self.data_dir)
            .await
            .context("final checkpoint")?;
        Ok(())
    }
}

/// The memory-pressure guard: `memory_limit` as given (0: none), else the
/// limit of the collector's cgroup, else none.
fn memory_guard(config: &Config) -> Option<Arc<crate::memory::MemoryGuard>> {
    let limit = match config.memory_limit {
        Some(0) => {
            tracing::info!("memory-pressure guard off (memory_limit 0)");
            return None;
        }
        Some(b) => b,
        None => match crate::memory::cgroup_limit(
            std::path::Path::new("/proc/self"),
            std::path::Path::new("/"),
        ) {
            Some(found) => {
                tracing::info!(limit_bytes = found.bytes, cgroup = %found.cgroup.display(),
                    "memory limit from the cgroup");
                found.bytes
            }
            None => {
                tracing::info!(
                    "no cgroup memory limit and no memory_limit: memory-pressure guard off"
                );
                return None;
            }
        },
    };
    let g = crate::memory::MemoryGuard::new(limit, config.memory_pressure_fraction);
    tracing::info!(
        limit_mib = limit >> 20,
        fraction = config.memory_pressure_fraction,
        used_mib = g.used() >> 20,
        "memory-pressure guard: new series are refused above the fraction of the limit"
    );
    Some(Arc::new(g))
}

/// Recovers state from `config.data_dir` and serves on the given listeners
/// until `shutdown` is cancelled (then call [`Running::stop`]).
pub async fn start(
    config: &Config,
    http: tokio::net::TcpListener,
    grpc: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<Running> {
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let telemetry = Telemetry::new();
    let memory_guard = memory_guard(config);
    let store = Arc::new(Store::new(StoreOptions {
        retention_ms: config.retention.as_millis() as i64,
        max_series: config.max_series,
        max_series_per_tenant: config.max_series_per_agent,
        max_bytes: config.memory_budget,
        out_of_order_window_ms: config.out_of_order_window.as_millis() as i64,
        max_future_ms: config.series_limits.max_future_ms,
        memory_guard: memory_guard.clone(),
        ..Default::default()
    }));
    if let Some(g) = memory_guard {
        // measured every second, so the state recovers without traffic
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => g.refresh(),
                    _ = stop.cancelled() => return,
                }
            }
        });
    }
    telemetry.watch_store(store.clone());
    let metadata = Arc::new(Metadata::default());

    let actions = match &config.actions {
        Some(path) => {
            let cfg = crate::actions::config::ActionsConfig::load(path)?;
            let a = crate::actions::engine::Actions::new(cfg, &data_dir.join("actions"))
                .map_err(anyhow::Error::msg)?;
            a.register(&mut telemetry.registry.lock());
            Some(a)
        }
        None => None,
    };
    // who of the fleet acts (rules, notifications, actions)
    let (leadership, election_tasks) =
        crate::fleet::leader::start(&config.election, shutdown.clone())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    leadership.register(&mut telemetry.registry.lock());
    let events: Option<Arc<dyn crate::ingest::EventSink>> = actions.as_ref().map(|a| {
        Arc::new(crate::fleet::leader::LeaderEvents(
            crate::actions::triggers::EventTriggers(a.clone()),
            leadership.clone(),
        )) as Arc<dyn crate::ingest::EventSink>
    });
    // gateway mode: rules and autoscalers query a remote API
    let remote = match &config.query_url {
        Some((url, headers)) => Some(
            crate::fleet::remote_query::RemoteQuery::new(url, headers, config.query.timeout)
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        ),
        None => None,
    };

    let logs = if !config.local_store {
        None
    } else {
        let dir = data_dir.join("logs");
        let opts = crate::logs::LogStoreOptions {
            retention: config.log_retention,
            max_bytes: config.log_max_bytes,
            ..Default::default()
        };
        Some(
            tokio::task::spawn_blocking(move || crate::logs::LogStore::open(&dir, opts))
                .await
                .context("log store task")??,
        )
    };
    if let Some(l) = &logs {
        telemetry.watch_logs(l.clone());
    }
    let local_store = config.local_store;
    let t0 = std::time::Instant::now();
    let (dd, st, md, tel, ls) = (
        data_dir.clone(),
        store.clone(),
        metadata.clone(),
        telemetry.clone(),
        logs.clone(),
    );
    let recovered = tokio::task::spawn_blocking(move || {
        use crate::ingest::LogSink;
        // replayed log records the log store already holds are dropped there;
        // replayed events are not acted on again
        checkpoint::recover(
            &dd,
            &st,
            local_store,
            &md,
            &tel,
            |l| {
                if let Some(ls) = &ls {
                    ls.append(l);
                }
            },
            |_| {},
        )
    })
    .await
    .context("recovery task")??;
    tracing::info!(
        records = recovered.records,
        torn_tails = recovered.torn,
        agents = recovered.durable.len(),
        series = store.series_count(),
        elapsed_ms = t0.elapsed().as_millis() as u64,
        "recovered from {}",
        data_dir.display()
    );
    let wal = Wal::start(&checkpoint::wal_dir(&data_dir))?;
    let space = crate::space::Space::new(
        vec![
            data_dir.clone(),
            checkpoint::wal_dir(&data_dir),
            data_dir.join("logs"),
        ],
        config.min_free_disk,
        shutdown.clone(),
    );
    space.register(&mut telemetry.registry.lock());
    wal.set_checkpointed(recovered.replay_from);
    let core = IngestCore::new(
        store.clone(),
        wal,
        telemetry.clone(),
        metadata.clone(),
        logs.clone().map(|l| l as Arc<dyn crate::ingest::LogSink>),
        events,
        recovered.durable,
    )
    .with_limits(config.series_limits)
    .with_space(space.clone());
    let core = Arc::new(if config.local_store {
        core
    } else {
        core.without_local_store()
    });

    // forwarding: after the WAL started and before anything can write to it
    // (push, rules, the self-scrape, agents) or checkpoint it, so a new
    // endpoint's "from now on" is before the first record of this run
    let forward_tasks = if config.forward.is_empty() {
        Vec::new()
    } else {
        crate::forward::start(
            &config.forward,
            &core.wal,
            metadata.clone(),
            &data_dir,
            &mut telemetry.registry.lock(),
            shutdown.clone(),
        )
        .context("forwarding")?
        .tasks
    };

    // rules and Alertmanager
    let external_labels = config.external_labels.clone();
    let notifier = if config.alertmanagers.is_empty() {
        None
    } else {
        let n = crate::notify::Notifier::new(crate::notify::NotifierOptions {
            alertmanagers: config.alertmanagers.clone(),
            external_labels: external_labels.clone(),
            external_url: config.external_url.clone(),
            ..Default::default()
        })
        .map_err(|e| anyhow::anyhow!("alertmanager: {e}"))?;
        n.register(&mut telemetry.registry.lock());
        Some(n)
    };
    let rules = if config.rules.is_empty() {
        None
    } else {
        let m = crate::rules::RuleManager::new(
            store.clone(),
            crate::rules::ManagerOptions {
                data_dir: Some(data_dir.join("rules")),
                default_interval: config.evaluation_interval,
                external_labels: external_labels.clone(),
                external_url: config.external_url.clone(),
                ..Default::default()
            },
            notifier.clone(),
        );
        m.register(&mut telemetry.registry.lock());
        let (mm, patterns) = (m.clone(), config.rules.clone());
        let n = tokio::task::spawn_blocking(move || mm.load(&patterns))
            .await
            .context("rule loading task")?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        tracing::info!(groups = n, "rules loaded");
        if let Some(a) = &actions {
            m.set_alert_sink(Arc::new(crate::fleet::leader::LeaderAlerts(
                crate::actions::triggers::RuleTriggers(a.clone()),
                leadership.clone(),
            )));
        }
        if let Some(r) = &remote {
            m.set_querier(Arc::new(r.clone()));
        }
        m.set_leadership(leadership.clone());
        m.set_output(core.clone());
        Some(m)
    };

    let push_metrics = Arc::new(crate::push::PushMetrics::default());
    push_metrics.register(&mut telemetry.registry.lock());
    let push =
        crate::ingest::push::PushIngest::start(core.clone(), config.push.clone(), push_metrics);

    let mut state = AppState::new(store.clone());
    state.rules = rules.clone();
    state.logs = logs.clone();
    state.leadership = leadership.clone();
    state.telemetry = Some(telemetry.clone());
    state.metadata = metadata.clone();
    state.actions = actions.clone();
    state.ingest = Some(core.clone());
    state.push = Some(push.clone());
    state.queries = crate::http::gate::QueryGate::new(config.query);
    state.queries.register(&mut telemetry.registry.lock());
    state.remote_write_receiver = config.remote_write_receiver;
    state.series_limits = config.series_limits;
    state.status = Arc::new(crate::http::status::StatusInfo {
        start_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0),
        given: Some(config.given.clone()),
        retention: config.retention,
        data_dir: config.data_dir.clone(),
        self_scrape_interval: config.self_scrape_interval,
    });
    let am_token = actions
        .as_ref()
        .and_then(|a| a.config().alertmanager_token.clone());
    state.auth = crate::http::auth::Auth::new(config.auth.clone(), am_token.as_deref())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    state.auth.register(&mut telemetry.registry.lock());
    let http_addr = http.local_addr()?;
    let grpc_addr = grpc.local_addr()?;
    let mut tasks = election_tasks;
    tasks.push(tokio::spawn(space.run()));

    // gRPC
    let svc = IngestService::new(core.clone(), config.max_message_bytes)
        .into_server(config.token.clone());
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)));
    if let Some(tls) = &config.tls {
        let cert =
            std::fs::read(&tls.cert).with_context(|| format!("tls_cert {}", tls.cert.display()))?;
        let key =
            std::fs::read(&tls.key).with_context(|| format!("tls_key {}", tls.key.display()))?;
        let mut tls_cfg = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(cert, key));
        if let Some(ca) = &tls.client_ca {
            // mutual TLS: an agent without a certificate signed by this CA
            // does not get past the handshake
            let pem =
                std::fs::read(ca).with_context(|| format!("tls_client_ca {}", ca.display()))?;
            tls_cfg = tls_cfg.client_ca_root(tonic::transport::Certificate::from_pem(pem));
        }
        builder = builder.tls_config(tls_cfg).context("TLS configuration")?;
    }
    let net = Arc::new(crate::net::NetMetrics::default());
    net.register(&mut telemetry.registry.lock());
    // connection slots stay below the open-file limit, with room for the
    // WAL, log segments, checkpoints and outgoing connections
    let nofile = crate::net::raise_nofile_limit();
    let mut grpc_limits = config.grpc_limits;
    let room = nofile
        .saturating_sub(1024)
        .saturating_sub(config.http_limits.max_connections as u64)
        .max(16);
    if grpc_limits.max_connections as u64 > room {
        tracing::warn!(
            configured = grpc_limits.max_connections,
            nofile,
            using = room,
            "grpc_max_connections lowered to stay below the open-file limit"
        );
        grpc_limits.max_connections = room as usize;
    }
    let sd = shutdown.clone();
    let incoming = crate::net::incoming(crate::net::Limited::new(
        grpc,
        grpc_limits,
        "grpc",
        net.clone(),
    ));
    let (otlp_metrics, otlp_logs) =
        crate::otlp::grpc::servers(push.clone(), config.max_message_bytes);
    let auth = crate::ingest::service::bearer(config.token.clone(), telemetry.clone());
    let router = builder
        .add_service(svc)
        .add_service(crate::otlp::grpc::Counted::new(
            tonic::service::interceptor::InterceptedService::new(otlp_metrics, auth.clone()),
            push.metrics.clone(),
            crate::push::Signal::Metrics,
        ))
        .add_service(crate::otlp::grpc::Counted::new(
            tonic::service::interceptor::InterceptedService::new(otlp_logs, auth),
            push.metrics.clone(),
            crate::push::Signal::Logs,
        ));
    tasks.push(tokio::spawn(async move {
        if let Err(e) = router
            .serve_with_incoming_shutdown(incoming, sd.cancelled_owned())
            .await
        {
            tracing::error!(error = %e, "gRPC server failed");
        }
    }));

    // HTTP
    let app = crate::http::router(state.clone());
    let http = crate::net::Limited::new(http, config.http_limits, "http", net);
    let auth = state.auth.clone();
    let tls: crate::net::TlsSource = Arc::new(move || auth.tls());
    tasks.push(tokio::spawn(crate::net::serve_http(
        http,
        app,
        tls,
        state.auth.http2(),
        shutdown.clone(),
        config.shutdown_timeout,
    )));
    {
        let (a, sd) = (state.auth.clone(), shutdown.clone());
        tasks.push(tokio::spawn(reload_auth_on_sighup(a, sd)));
    }

    // checkpoints and retention
    let (c, dd, sd, logs) = (
        core.clone(),
        data_dir.clone(),
        shutdown.clone(),
        logs.clone(),
    );
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut last = std::time::Instant::now();
        loop {
            tokio::select! {
                _ = sd.cancelled() => break,
                _ = tick.tick() => {}
            }
            let now_ms = vigil_common::time::now_ms();
            let st = c.store.clone();
            let _ = tokio::task::spawn_blocking(move || st.trim(now_ms)).await;
            if let Some(ls) = logs.clone() {
                let _ = tokio::task::spawn_blocking(move || {
                    ls.trim(now_ms.saturating_mul(1_000_000))
                })
                .await;
            }
            c.telemetry.series.set(c.store.series_count() as i64);
            let wal_bytes = c.wal.stats.bytes.load(Ordering::Relaxed);
            if last.elapsed() >= CHECKPOINT_EVERY || wal_bytes >= CHECKPOINT_WAL_BYTES {
                if let Err(e) = checkpoint::write(&c, &dd).await {
                    tracing::error!(error = %e, "checkpoint failed; the WAL keeps everything meanwhile");
                }
                last = std::time::Instant::now();
            }
        }
    }));

    // the collector's own metrics, as series
    if !config.self_scrape_interval.is_zero() {
        tasks.push(tokio::spawn(crate::selfscrape::run(
            core.clone(),
            http_addr.to_string(),
            config.self_scrape_interval,
            shutdown.clone(),
        )));
    }

    // rule evaluation, notification, reload on SIGHUP
    if let Some(m) = &rules {
        tasks.push(tokio::spawn(m.clone().run(shutdown.clone())));
        let (m, sd) = (m.clone(), shutdown.clone());
        tasks.push(tokio::spawn(async move { reload_on_sighup(m, sd).await }));
    }
    if let Some(n) = &notifier {
        tasks.push(tokio::spawn(n.clone().run(shutdown.clone())));
        if let Some(a) = &actions {
            tasks.push(tokio::spawn(a.clone().run_crash_loop_alerts(
                n.clone(),
                Duration::from_secs(60),
                shutdown.clone(),
            )));
        }
    }

    // autoscalers and release tracking
    if let Some(a) = actions {
        let inner: Arc<dyn crate::actions::source::MetricSource> = match &remote {
            Some(r) => Arc::new(r.clone()),
            None => Arc::new(crate::actions::source::PromqlSource::new(store.clone())),
        };
        let source = Arc::new(crate::fleet::leader::LeaderSource(
            inner,
            leadership.clone(),
        ));
        // rollouts are tracked and judged (and rolled back) by the leader only
        tasks.push(tokio::spawn(
            a.clone().run_rollouts(source.clone(), shutdown.clone()),
        ));
        // remote data arrives on no local signal: the interval paces them
        let data = remote.is_none().then(|| store.subscribe_appends());
        let sd = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            a.run_autoscalers(source, data, sd).await;
        }));
    }

    tasks.extend(forward_tasks);

    state.ready.store(true, Ordering::Release);
    tracing::info!(http = %http_addr, grpc = %grpc_addr, "vigil-collector ready");
    Ok(Running {
        http_addr,
        grpc_addr,
        state,
        core,
        shutdown,
        tasks,
        data_dir,
        shutdown_timeout: config.shutdown_timeout,
    })
}

/// Re-reads the credentials on SIGHUP; a broken file keeps those in force.
async fn reload_auth_on_sighup(a: Arc<crate::http::auth::Auth>, shutdown: CancellationToken) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        return;
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = hup.recv() => if r.is_none() { return; },
        }
        let a = a.clone();
        match tokio::task::spawn_blocking(move || a.reload()).await {
            Ok(Ok(())) => tracing::info!("SIGHUP: credentials reloaded"),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "SIGHUP: credentials not reloaded; the previous ones stay")
            }
            Err(_) => {}
        }
    }
}

/// Reloads the rule files on SIGHUP; a failed reload keeps the running
/// rules (the manager logs why).
async fn reload_on_sighup(m: Arc<crate::rules::RuleManager>, shutdown: CancellationToken) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload with POST /-/reload");
        return;
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = hup.recv() => if r.is_none() { return; },
        }
        tracing::info!("SIGHUP: reloading rules");
        let m = m.clone();
        let _ = tokio::task::spawn_blocking(move || m.reload()).await;
    }
}

/// `vigil-collector run`. `config_file` is kept for reloads (SIGHUP).
pub fn main(config: Config, _config_file: Option<PathBuf>) -> anyhow::Result<()> {
    crate::tls::ensure_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("vigil-collector")
        // deep (bounded) queries recurse; see promql::MAX_DEPTH
        .thread_stack_size(crate::promql::THREAD_STACK_BYTES)
        .build()
        .context("tokio runtime")?;
    rt.block_on(async move {
        let http = tokio::net::TcpListener::bind(config.http_listen)
            .await
            .with_context(|| format!("cannot listen on http_listen {}", config.http_listen))?;
        let grpc = tokio::net::TcpListener::bind(config.grpc_listen)
            .await
            .with_context(|| format!("cannot listen on grpc_listen {}", config.grpc_listen))?;
        let shutdown = CancellationToken::new();
        vigil_common::shutdown::on_signals(shutdown.clone());
        let running = start(&config, http, grpc, shutdown.clone()).await?;
        shutdown.cancelled().await;
        running.stop().await
    })
}
