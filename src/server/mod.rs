//! `sidecall-server`: the registry and signaling server.
//!
//! [`start`] binds, opens the database and serves until [`RunningServer::shutdown`].

pub mod auth;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod ratelimit;
pub mod relay;
pub mod store;
pub mod ws;

use crate::protocol::IceServer;
use hub::{Hub, HubConfig};
use metrics::Metrics;
use ratelimit::KeyedLimiter;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use store::{SqlStore, Store};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Default port of the server.
pub const DEFAULT_PORT: u16 = 7480;

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// `sqlite://…` or `postgres://…`; `None`: `registry.sqlite3` in `data_dir`.
    pub database_url: Option<String>,
    pub data_dir: PathBuf,
    pub hub: HubConfig,
    /// The relay devices are given.
    pub relay: RelayMode,
}

/// Which relay devices use when they cannot reach each other directly.
#[derive(Clone, Debug, Default)]
pub enum RelayMode {
    /// None (sessions work only where the devices reach each other).
    #[default]
    Off,
    /// This server's own TURN relay.
    Own(relay::RelayConfig),
    /// A coturn running with `use-auth-secret` and this `static-auth-secret`.
    External { urls: Vec<String>, secret: String },
}

impl ServerConfig {
    /// A server on `listen` keeping its SQLite database in `data_dir`.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        ServerConfig {
            listen,
            database_url: None,
            data_dir,
            hub: HubConfig::default(),
            relay: RelayMode::Off,
        }
    }

    pub fn with_ice_servers(mut self, ice: Vec<IceServer>) -> Self {
        self.hub.ice_servers = ice;
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "cannot listen on {addr}: {source} (is another server running there? choose another port with --listen)"
    )]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot open the registry database: {0}")]
    Store(#[from] store::StoreError),
    #[error("invalid default region: {0}")]
    Region(#[from] crate::number::NumberError),
    #[error(transparent)]
    Relay(#[from] relay::RelayError),
}

/// A server that is running; dropping it does not stop it, [`RunningServer::shutdown`] does.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub hub: Arc<Hub>,
    /// This server's own relay, if it runs one.
    pub relay: Option<relay::Relay>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    store: SqlStore,
}

/// Opens the database, binds and starts serving.
pub async fn start(cfg: ServerConfig) -> Result<RunningServer, ServerError> {
    crate::number::parse_region(&cfg.hub.default_region)?;
    let store = match &cfg.database_url {
        Some(url) => SqlStore::connect(url).await?,
        None => SqlStore::open_sqlite_file(&cfg.data_dir.join("registry.sqlite3")).await?,
    };
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| ServerError::Bind { addr: cfg.listen, source })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind { addr: cfg.listen, source })?;
    let metrics = Arc::new(Metrics::new());
    let hub = Hub::new(Arc::new(store.clone()) as Arc<dyn Store>, cfg.hub.clone(), metrics.clone());
    let own_relay = start_relay(&cfg, &hub, metrics).await?;
    let state = http::AppState {
        hub: hub.clone(),
        // Ten failed logins at once, then one every six seconds, per number and per address.
        login_limit: Arc::new(KeyedLimiter::new(10.0, 1.0 / 6.0)),
    };
    let app = http::router(state).into_make_service_with_connect_info::<SocketAddr>();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let serve_hub = hub.clone();
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop_rx.await;
            serve_hub.shutdown();
        };
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::error!("server stopped with an error: {e}");
        }
    });
    tracing::info!(%addr, backend = ?store.backend(), "sidecall-server listening");
    Ok(RunningServer { addr, hub, relay: own_relay, stop: Some(stop_tx), task, store })
}

/// Starts the relay the configuration asks for and tells the hub about it.
async fn start_relay(
    cfg: &ServerConfig,
    hub: &Arc<Hub>,
    metrics: Arc<Metrics>,
) -> Result<Option<relay::Relay>, ServerError> {
    let crypto = rtc_crypto::default_provider().map_err(|e| relay::RelayError::Crypto(e.to_string()))?;
    let (ice, own) = match &cfg.relay {
        RelayMode::Off => return Ok(None),
        RelayMode::External { urls, secret } => {
            let secret = relay::creds::Secret::new(secret, crypto);
            let ttl = relay::RelayConfig::default().credential_ttl;
            (relay::RelayIce::External { urls: urls.clone(), secret, ttl }, None)
        }
        RelayMode::Own(rc) => {
            let secret = relay::creds::Secret::load_or_create(&cfg.data_dir, crypto).map_err(|source| {
                relay::RelayError::Secret { dir: cfg.data_dir.display().to_string(), source }
            })?;
            let gate = Arc::new(hub::HubGate(Arc::downgrade(hub)));
            let r = relay::Relay::start(rc.clone(), secret, gate, metrics).await?;
            (relay::RelayIce::Own(r.clone()), Some(r))
        }
    };
    *hub.relay.write() = Some(Arc::new(ice));
    Ok(own)
}

impl RunningServer {
    /// Base URL clients use, e.g. `http://127.0.0.1:7480`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Tells every client the server is restarting, stops listening, waits (briefly) for
    /// connections to close and closes the database.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let drained = async {
            while self.hub.metrics.connections.get() > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(3), drained).await;
        if tokio::time::timeout(Duration::from_secs(2), &mut self.task).await.is_err() {
            self.task.abort();
        }
        if let Some(r) = &self.relay {
            r.shutdown();
        }
        self.store.close().await;
        tracing::info!("sidecall-server stopped");
    }

    /// Serves until the process gets Ctrl-C or SIGTERM, then shuts down gracefully.
    pub async fn run_until_signal(self) {
        wait_for_signal().await;
        tracing::info!("shutting down");
        self.shutdown().await;
    }
}

async fn wait_for_signal() {
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
        _ = ctrl_c => {}
        _ = term => {}
    }
}
