//! Wires the agent together for `vigil-agent run`: the scrape loop (every
//! `--interval`, missed ticks skipped so scrapes never pile up), the shipper,
//! and the HTTP endpoint; a graceful stop on SIGTERM/SIGINT seals the open
//! batch and waits (bounded) for the collector's final acks.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::Context as _;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::scrape::Scraper;
use crate::telemetry::Telemetry;

/// `vigil-agent scrape`: one scrape in Prometheus text format.
pub fn scrape_once(config: &Config) -> anyhow::Result<String> {
    let (scrape, report) = Scraper::new(config).scrape();
    for (reader, e) in report.errors {
        tracing::warn!(reader, error = %e, "scrape error");
    }
    Ok(scrape.encode_text(Some(&config.node_name)))
}

/// `vigil-agent run`.
pub fn main(config: Config) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("vigil-agent")
        .build()
        .context("tokio runtime")?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        vigil_common::shutdown::on_signals(shutdown.clone());
        // on a worker, not this thread: the scrape loop's wake-ups and
        // hand-offs stay among the runtime's threads
        tokio::spawn(run(config, shutdown))
            .await
            .context("the agent's main task failed")?
    })
}

/// Runs until `shutdown` is cancelled, then stops gracefully.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let telemetry = Arc::new(Telemetry::default());
    let (ship, ship_task) = crate::ship::start(&config, telemetry.clone(), shutdown.clone())?;
    let latest = Arc::new(Mutex::new(None));
    let tailer = crate::logs::Tailer::new(&config.logs, &config.host_root, &config.state_dir)
        .context("cannot start the log tailer")?;
    let log_metrics = tailer.metrics();
    let log_acks = ship
        .take_log_acks()
        .context("log acknowledgements already taken")?;
    let tailer_task = tokio::spawn(tailer.run(ship.log_sender(), log_acks, shutdown.clone()));
    let targets = Arc::new(crate::targets::Registry::default());
    let target_metrics = Arc::new(crate::targets::metrics::TargetMetrics::default());
    let targets_task = tokio::spawn(crate::targets::run(
        config.scrape_jobs.clone(),
        crate::targets::discovery::Context {
            node: config.node_name.clone(),
            host_root: config.host_root.clone(),
            metrics: target_metrics.clone(),
        },
        ship.clone(),
        targets.clone(),
        shutdown.clone(),
    ));
    let probes_task = {
        let (sockets, refresh, probes_on) = config.probes.clone();
        tokio::spawn(crate::probes::run(
            sockets,
            config.host_root.clone(),
            refresh,
            probes_on,
            ship.clone(),
            shutdown.clone(),
        ))
    };
    if let Some(addr) = config.http_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on http_listen {addr}"))?;
        tracing::info!(http = %listener.local_addr()?, "agent HTTP endpoint");
        let app = crate::http::app(crate::http::AgentState {
            node: config.node_name.clone(),
            latest: latest.clone(),
            telemetry: telemetry.clone(),
            targets: targets.clone(),
            target_metrics: target_metrics.clone(),
        });
        let sd = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(sd.cancelled_owned())
                .await
            {
                tracing::error!(error = %e, "agent HTTP server failed");
            }
        });
    }
    tracing::info!(node = %config.node_name, collectors = ?config.collectors, interval = ?config.interval, "vigil-agent running");
    let scraper = Arc::new(Mutex::new(Scraper::new(&config)));
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // An OOM kill is shipped as soon as the kernel logs it: restarts wait on it.
    let oom = Arc::new(tokio::sync::Notify::new());
    {
        let oom = oom.clone();
        if let Err(e) = crate::cgroup::kmsg::watch(&config.host_root, move || oom.notify_one()) {
            tracing::warn!(error = %e, "cannot watch the kernel log; OOM kills are shipped with the next scrape");
        }
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
            _ = oom.notified() => {
                let sc = scraper.clone();
                let Ok((scrape, errors)) =
                    tokio::task::spawn_blocking(move || sc.lock().events()).await
                else {
                    continue;
                };
                for e in &errors {
                    telemetry.error("cgroup");
                    tracing::debug!(error = %e, "kernel log error");
                }
                if !scrape.events.is_empty() {
                    tracing::info!(events = scrape.events.len(), "OOM kill shipped ahead of the next scrape");
                    ship.submit_scrape(scrape);
                }
                continue;
            }
        }
        let sc = scraper.clone();
        let t0 = Instant::now();
        let Ok((mut scrape, report)) =
            tokio::task::spawn_blocking(move || sc.lock().scrape()).await
        else {
            tracing::error!("scrape task failed");
            continue;
        };
        for (reader, e) in &report.errors {
            telemetry.error(reader);
            tracing::debug!(reader, error = %e, "scrape error");
        }
        telemetry.scrapes.fetch_add(1, Ordering::Relaxed);
        {
            let mut m = telemetry.reader_micros.lock();
            for (reader, d) in &report.durations {
                m.insert(reader, d.as_micros() as u64);
            }
        }
        telemetry
            .containers_seen
            .store(report.containers as u64, Ordering::Relaxed);
        telemetry
            .processes_seen
            .store(report.processes as u64, Ordering::Relaxed);
        let (open, limit) = report.cgroup_open_files;
        telemetry
            .cgroup_open_files
            .store(open as u64, Ordering::Relaxed);
        telemetry
            .cgroup_open_files_limit
            .store(limit as u64, Ordering::Relaxed);
        let (watches, walks, degraded) = report.cgroup_discovery;
        telemetry
            .cgroup_watches
            .store(watches as u64, Ordering::Relaxed);
        telemetry.cgroup_walks.store(walks, Ordering::Relaxed);
        telemetry
            .cgroup_discovery_degraded
            .store(u64::from(degraded), Ordering::Relaxed);
        telemetry
            .scrape_micros
            .store(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
        telemetry
            .samples_scraped
            .fetch_add(scrape.sample_count() as u64, Ordering::Relaxed);
        // the agent's own metrics travel with every scrape
        scrape.families.extend(telemetry.families());
        scrape.families.extend(target_metrics.families());
        log_metrics.collect_into(&mut scrape);
        // shared, not copied: /metrics and the shipper read the same scrape
        let scrape = Arc::new(scrape);
        *latest.lock() = Some(scrape.clone());
        ship.submit_scrape(scrape);
    }
    tracing::info!("stopping: sealing the last batch and waiting for acks");
    let _ = targets_task.await;
    let _ = probes_task.await;
    match tailer_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "log tailer stopped with an error"),
        Err(e) => tracing::error!(error = %e, "log tailer task failed"),
    }
    drop(ship);
    let _ = ship_task.await;
    Ok(())
}
