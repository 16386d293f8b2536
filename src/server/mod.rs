//! `sidecall-server`: the registry and signaling server.
//!
//! [`start`] binds, opens the database and serves until [`RunningServer::shutdown`].

pub mod admin;
pub mod auth;
pub mod cluster;
pub mod hashing;
pub mod http;
pub mod hub;
pub mod listen;
pub mod metrics;
pub mod pbx;
pub mod ratelimit;
pub mod relay;
pub mod store;
pub mod verify;
pub mod ws;

use crate::protocol::IceServer;
use hub::{Hub, HubConfig};
use metrics::Metrics;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use store::{SqlStore, Store};
use tokio::sync::watch;
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
    /// What one client, one address and everyone together may take.
    pub limits: Limits,
    /// Serve HTTPS and WSS with this certificate instead of plain HTTP.
    pub tls: Option<crate::tls::TlsFiles>,
    /// Reverse proxies whose `X-Forwarded-For` names the client (and whose connections are
    /// not capped per address).
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// The PBX calls are placed through (click-to-call), if any.
    pub pbx: Option<pbx::PbxConfig>,
    /// How a number is proven before an account is bound to it.
    pub verify: verify::VerifyConfig,
    /// Run as one node of a cluster (PostgreSQL + NATS) instead of alone.
    pub cluster: Option<cluster::ClusterConfig>,
}

/// Bounds on what clients may take from the server.
#[derive(Clone, Debug)]
pub struct Limits {
    /// New accounts one address may create at once; then one every 30 s.
    pub registrations_per_address: u32,
    /// New accounts everyone together may create at once; then five a second.
    pub registrations_global: u32,
    /// Password hashes computed at once (default: the number of cores).
    pub hash_workers: usize,
    /// Password checks waiting beyond those; more are refused with `429`.
    pub hash_queue: usize,
    /// Open TCP connections from one address (NATs put many users behind one).
    pub connections_per_address: usize,
    /// Time a client has to send a request's headers; also how long a keep-alive connection
    /// may wait for its next request.
    pub header_timeout: Duration,
    /// Time a client has to send a request's body.
    pub body_timeout: Duration,
    /// A connection (a WebSocket too) on which nothing moved for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Limits {
            registrations_per_address: 10,
            registrations_global: 50,
            hash_workers: cores,
            hash_queue: cores * 4,
            connections_per_address: 256,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
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
            limits: Limits::default(),
            tls: None,
            trusted_proxies: Vec::new(),
            pbx: None,
            verify: verify::VerifyConfig::default(),
            cluster: None,
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
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Cluster(#[from] cluster::ClusterError),
}

/// A server that is running; dropping it does not stop it, [`RunningServer::shutdown`] does.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub hub: Arc<Hub>,
    /// This server's own relay, if it runs one.
    pub relay: Option<relay::Relay>,
    /// SHA-256 fingerprint of the TLS certificate, when serving TLS.
    pub fingerprint: Option<String>,
    stop: Option<watch::Sender<bool>>,
    task: JoinHandle<()>,
    store: SqlStore,
}

/// Opens the database, binds and starts serving.
pub async fn start(cfg: ServerConfig) -> Result<RunningServer, ServerError> {
    crate::tls::install_default_provider();
    crate::number::parse_region(&cfg.hub.default_region)?;
    let store = match &cfg.database_url {
        Some(url) => SqlStore::connect(url).await?,
        None => SqlStore::open_sqlite_file(&cfg.data_dir.join("registry.sqlite3")).await?,
    };
    let (tls, fingerprint) = match &cfg.tls {
        Some(files) => {
            let config = crate::tls::server_config(files)?;
            let cert = crate::tls::read_cert(&files.cert)?;
            (Some(tokio_rustls::TlsAcceptor::from(config)), Some(crate::tls::fingerprint(&cert)))
        }
        None => (None, None),
    };
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| ServerError::Bind { addr: cfg.listen, source })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind { addr: cfg.listen, source })?;
    let metrics = Arc::new(Metrics::new());
    let hub = Hub::new(Arc::new(store.clone()) as Arc<dyn Store>, cfg.hub.clone(), metrics.clone());
    let (stop_tx, stop_rx) = watch::channel(false);
    let cluster = match &cfg.cluster {
        Some(cc) => {
            let url = cfg.database_url.as_deref().ok_or(cluster::ClusterError::NeedsPostgres)?;
            let c = cluster::Cluster::start(cc, url, &hub, stop_rx.clone()).await?;
            hub.join_cluster(c.clone());
            Some(c)
        }
        None => None,
    };
    let own_relay = start_relay(&cfg, &hub, metrics.clone()).await?;
    if let Some(p) = &cfg.pbx {
        *hub.pbx.write() = Some(p.start());
    }
    hashing::return_large_allocations();
    let admission = listen::Admission::new(
        cfg.limits.connections_per_address,
        cfg.trusted_proxies.clone(),
        metrics.clone(),
    );
    let state = http::AppState::new(
        hub.clone(),
        &cfg.limits,
        admission.clone(),
        cfg.trusted_proxies.clone(),
        cfg.verify.clone(),
    );
    let serving = listen::Serving {
        router: http::router(state, cfg.limits.body_timeout),
        admission,
        tls,
        header_timeout: cfg.limits.header_timeout,
        idle_timeout: cfg.limits.idle_timeout,
        metrics,
    };
    let serve_hub = hub.clone();
    let mut hub_stop = stop_rx.clone();
    tokio::spawn(async move {
        let _ = hub_stop.changed().await;
        serve_hub.shutdown();
    });
    tokio::spawn(verify::watch_revocations(hub.clone(), stop_rx.clone()));
    let task = tokio::spawn(listen::serve(listener, serving, stop_rx));
    let scheme = if fingerprint.is_some() { "https" } else { "http" };
    let node = cluster.as_ref().map(|c| c.node.to_string());
    tracing::info!(%addr, scheme, backend = ?store.backend(), node, "sidecall-server listening");
    if let Some(f) = &fingerprint {
        tracing::info!("TLS certificate fingerprint (SHA-256): {f}");
    }
    Ok(RunningServer { addr, hub, relay: own_relay, fingerprint, stop: Some(stop_tx), task, store })
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
        let scheme = if self.fingerprint.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Tells every client the server is restarting, stops listening, waits (briefly) for
    /// connections to close and closes the database.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
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
        if let Some(c) = self.hub.cluster() {
            c.leave().await;
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
