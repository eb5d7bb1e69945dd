//! The daemon's life: start-up from a [`ServeConfig`] (open the bank, refuse an open daemon
//! beyond loopback, bind, serve gRPC and the web page), the background history retention,
//! and graceful shutdown (SIGINT/SIGTERM stop both servers, then the index snapshot is
//! written for the next start).
use std::net::SocketAddr;
use std::sync::Arc;

use relist_core::auth::Keys;
use relist_core::bank::Bank;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::config::ServeConfig;
use crate::grpc::{serve_with, ServerOptions};
use crate::metrics::Metrics;
use crate::ServerError;

/// Runs the daemon until SIGINT or SIGTERM, then shuts it down gracefully.
pub async fn run(cfg: ServeConfig) -> Result<(), ServerError> {
    let bank = {
        let (dir, thresholds, limits) = (cfg.data_dir.clone(), cfg.thresholds, cfg.limits);
        let (thumbnails, detection, min_free) = (cfg.thumbnails, cfg.detection, cfg.min_free_disk_bytes);
        let (cache_bytes, store) = (cfg.cache_bytes, cfg.store.clone());
        tokio::task::spawn_blocking(move || {
            let bank = match store {
                Some(url) => {
                    let record = Arc::new(relist_pg::PgStore::connect(&url)?);
                    info!(store = %relist_core::storage::Storage::describe(record.as_ref()), "replica of a shared store");
                    Bank::open_shared(&dir, thresholds, limits, cache_bytes, record)
                }
                None => Bank::open_with_cache(&dir, thresholds, limits, cache_bytes),
            };
            bank.map(|b| if thumbnails { b } else { b.without_thumbnails() })
                .map(|b| b.with_detection(detection).with_min_free_disk(min_free))
        })
        .await
        .map_err(|e| ServerError::Task("opening the store", e))?
        .map_err(|e| ServerError::OpenStore(cfg.data_dir.clone(), e))?
    };
    let no_keys = Keys::open(bank.db())?.is_empty();
    check_exposure(
        no_keys,
        cfg.exposure.insecure,
        [Some(cfg.listen), cfg.exposure.http].into_iter().flatten(),
    )?;
    let tls = match &cfg.exposure.tls {
        Some(t) => Some(relist_proto::transport::server_tls(
            &t.cert,
            &t.key,
            t.client_ca.as_deref(),
        )?),
        None => None,
    };
    let listener = bind(cfg.listen, "").await?;
    let bank = Arc::new(bank);
    let follower = Follower::start(bank.clone());
    let metrics = Arc::new(Metrics::default());
    if let Some(max_age) = cfg.history_retention {
        spawn_retention(bank.clone(), max_age, std::time::Duration::from_secs(600));
    }
    // One shutdown signal stops both servers.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    // The web page and `/metrics` alone, each where it was asked for.
    let pages = [
        (
            cfg.exposure.http,
            " (--http)",
            crate::web::router_with_limits(bank.clone(), metrics.clone(), cfg.requests),
        ),
        (
            cfg.exposure.metrics,
            " (--metrics)",
            crate::web::metrics_router(bank.clone(), metrics.clone()),
        ),
    ];
    let mut page_tasks = Vec::new();
    for (addr, flag, router) in pages {
        if let Some(addr) = addr {
            let listener = bind(addr, flag).await?;
            page_tasks.push(tokio::spawn(crate::web::serve_with(
                router,
                listener,
                stopped(stop_rx.clone()),
            )));
        }
    }
    let options = ServerOptions {
        batch_lease: Some(cfg.batch_lease),
        limits: cfg.requests,
        tls,
        metrics: Some(metrics),
    };
    serve_with(bank.clone(), listener, options, stopped(stop_rx)).await?;
    for task in page_tasks {
        task.await.map_err(|e| ServerError::Task("web server", e))??;
    }
    follower.stop().await;
    write_snapshot(bank).await;
    Ok(())
}

/// The thread that keeps a replica's mirror and index up to date with its shared store
/// ([`Bank::follow`]); none for the embedded store. A plain thread: the PostgreSQL client
/// blocks, and following is one long loop.
pub struct Follower {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Follower {
    /// Starts following when the bank mirrors a shared store.
    pub fn start(bank: Arc<Bank>) -> Follower {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = bank.is_shared().then(|| {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("relist-follow".into())
                .spawn(move || bank.follow(&stop))
        });
        let thread = match thread {
            Some(Ok(t)) => Some(t),
            Some(Err(e)) => {
                warn!(error = %e, "cannot start the follower thread; this replica will not see other replicas' writes");
                None
            }
            None => None,
        };
        Follower { stop, thread }
    }

    /// Stops following (within one poll) and waits for the thread.
    pub async fn stop(mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| ServerError::Bind(addr, what, e))
}

/// Refuses to serve an open daemon (no API keys yet) on anything but loopback, unless the
/// operator said `--insecure`: relist holds evidence and sits on marketplaces' upload path.
pub fn check_exposure(
    no_keys: bool,
    insecure: bool,
    addrs: impl IntoIterator<Item = SocketAddr>,
) -> Result<(), ServerError> {
    if !no_keys {
        return Ok(());
    }
    for addr in addrs {
        if addr.ip().is_loopback() {
            continue;
        }
        if !insecure {
            return Err(ServerError::Config(format!(
                "refusing to serve {addr} without API keys: anyone could read and change the bank. \
                 Create an admin key first (relist keys create --role admin --data-dir DIR), \
                 or pass --insecure"
            )));
        }
        warn!(%addr, "serving without API keys on a non-loopback address (--insecure)");
    }
    Ok(())
}

/// On graceful shutdown, once every server has stopped: writes the index snapshot (see
/// [`relist_core::snapshot`]) so that the next start skips the full load from the store. A failure
/// is a warning: it only costs the next start that full load.
pub async fn write_snapshot(bank: Arc<Bank>) {
    // Logged in the task: it may drop the last handle of the bank, which takes a while.
    let task = tokio::task::spawn_blocking(move || match bank.write_snapshot() {
        Ok(Some(w)) => info!(
            bytes = w.bytes,
            elapsed_ms = w.elapsed.as_millis() as u64,
            "index snapshot written"
        ),
        Ok(None) => {}
        Err(e) => warn!(error = %e, "index snapshot not written; the next start loads from the store"),
    });
    if let Err(e) = task.await {
        warn!(error = %e, "index snapshot task failed; the next start loads from the store");
    }
}

/// Records deleted per retention batch: small enough that a batch never holds up requests.
pub const RETENTION_BATCH: usize = 1_000;

/// Deletes match history older than `max_age`, now and then every `every`, in bounded
/// batches with a pause between them so checks are not starved.
pub fn spawn_retention(
    bank: Arc<Bank>,
    max_age: std::time::Duration,
    every: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let before = relist_core::domain::now_ms() - max_age.as_millis() as i64;
            let mut total = 0usize;
            loop {
                let bank = bank.clone();
                match tokio::task::spawn_blocking(move || bank.expire_history(before, RETENTION_BATCH)).await {
                    Ok(Ok(0)) => break,
                    Ok(Ok(n)) => total += n,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "history retention failed; will retry");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "history retention task failed");
                        break;
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            if total > 0 {
                info!(deleted = total, "expired match history");
            }
        }
    })
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    info!("shutdown signal received");
}
