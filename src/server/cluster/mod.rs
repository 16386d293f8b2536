//! Many server nodes on one PostgreSQL and one NATS (`sidecall-server --nats URL`).
//!
//! - **Presence** is a PostgreSQL table: one row per online device naming the node whose
//!   WebSocket holds it, written at login and logout. A row counts only while its node's
//!   lease (`cluster_nodes.expires_at`, renewed every second) runs, so a node that dies
//!   needs nobody to delete its rows. NATS 2.9's key-value store has no per-key expiry: it
//!   would need a renewal per device instead of one per node. Every node also keeps a copy
//!   of the table in memory, loaded at start (and after a NATS outage) and kept current by
//!   `online`/`offline` broadcasts, so that routing a request asks no database: with a
//!   PostgreSQL query per request, three nodes spent most of the machine's two cores at
//!   3,000 requests/s (cross-node p99 71 ms; see the registry benchmark).
//! - **Authority**: a session lives on one node, the *authority*: the node holding the
//!   callee's device with the lowest node id at the time of the request. All requests to a
//!   callee meet there, so the first answer wins, the callee's ring limits are per user and
//!   the answer timeout runs once. The session id starts with the authority's node id, so any
//!   node can pass a device's message on to it.
//! - **Routing**: a subject per node (see [`wire`]); the authority sends what a remote
//!   device must see to the node holding it, and that node passes the device's answers,
//!   signals and ends back.
//! - **Liveness**: every node beats every 500 ms on `PREFIX.all`; one silent for 2 s is lost:
//!   sessions it held or took part in end with `node_lost` for everyone else.

pub mod wire;

use crate::server::hub::Hub;
use crate::server::metrics::Metrics;
use bytes::Bytes;
use parking_lot::Mutex;
use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use wire::{AllMsg, NodeMsg, PresenceRow};

/// How often a node beats on NATS and renews its lease.
pub const BEAT: Duration = Duration::from_millis(500);
/// A node not heard for this long is lost.
pub const LOST_AFTER: Duration = Duration::from_secs(2);
/// How long a node's lease in PostgreSQL lasts without renewal.
const LEASE: &str = "3 seconds";
/// Messages waiting to be published; beyond that they are dropped (and logged).
const OUT_QUEUE: usize = 65_536;

#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// `nats://HOST:PORT`.
    pub nats_url: String,
    /// Subject prefix: clusters sharing one NATS must have different names.
    pub name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("a cluster needs PostgreSQL: give --database-url postgres://… with --nats")]
    NeedsPostgres,
    #[error("cannot use the NATS URL {url}: {why}")]
    Nats { url: String, why: String },
    #[error("cluster database: {0}")]
    Db(#[from] sqlx::Error),
}

struct Outgoing {
    subject: String,
    payload: Bytes,
}

/// This node's part in the cluster.
pub struct Cluster {
    /// This node's id (random per start: a restarted node is a new node).
    pub node: Arc<str>,
    prefix: String,
    nats: async_nats::Client,
    pool: PgPool,
    /// The lease has a connection of its own: a burst of logins or logouts queueing for
    /// the main pool must not make the node look unreachable.
    lease_pool: PgPool,
    out: mpsc::Sender<Outgoing>,
    /// Other nodes and when they last beat.
    peers: Mutex<HashMap<String, Instant>>,
    /// PostgreSQL answered the last lease renewal.
    db_up: AtomicBool,
    /// The presence table as this node knows it.
    presence: Mutex<Presence>,
    /// One load of the presence table at a time.
    syncing: tokio::sync::Mutex<()>,
    /// Logins and logouts for the presence table (see [`presence_writer`]).
    writes: mpsc::UnboundedSender<PresenceOp>,
    metrics: Arc<Metrics>,
}

fn new_node_id() -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..10).map(|_| CHARS[rng.random_range(0..CHARS.len())] as char).collect()
}

impl Cluster {
    /// Joins the cluster: connects to NATS (retrying in the background, so that a node
    /// starts, and says it is not ready, while NATS is down) and starts the beat, the lease
    /// and the subscriptions.
    pub async fn start(
        cfg: &ClusterConfig,
        database_url: &str,
        hub: &Arc<Hub>,
        stop: watch::Receiver<bool>,
    ) -> Result<Arc<Cluster>, ClusterError> {
        if !database_url.starts_with("postgres") {
            return Err(ClusterError::NeedsPostgres);
        }
        let node = new_node_id();
        let nats_err = |why: String| ClusterError::Nats { url: cfg.nats_url.clone(), why };
        let nats = async_nats::ConnectOptions::new()
            .name(format!("sidecall-server {node}"))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .reconnect_delay_callback(|n| Duration::from_millis((100 * 2u64.pow(n.min(4) as u32)).min(1000)))
            .connect(cfg.nats_url.as_str())
            .await
            .map_err(|e| nats_err(e.to_string()))?;
        // Few connections: the writes come in batches, and PostgreSQL's default of 100
        // connections is shared by every node (the store keeps 8 of its own).
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy(database_url)?;
        let lease_pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(2))
            .connect_lazy(database_url)?;
        let (out, out_rx) = mpsc::channel(OUT_QUEUE);
        let (writes, writes_rx) = mpsc::unbounded_channel();
        let cluster = Arc::new(Cluster {
            node: Arc::from(node.as_str()),
            prefix: cfg.name.clone(),
            nats,
            pool,
            lease_pool,
            out,
            peers: Mutex::new(HashMap::new()),
            db_up: AtomicBool::new(false),
            presence: Mutex::new(Presence::default()),
            syncing: tokio::sync::Mutex::new(()),
            writes,
            metrics: hub.metrics.clone(),
        });
        let mine =
            cluster.nats.subscribe(cluster.node_subject(&node)).await.map_err(|e| nats_err(e.to_string()))?;
        let all =
            cluster.nats.subscribe(format!("{}.all", cfg.name)).await.map_err(|e| nats_err(e.to_string()))?;
        cluster.renew_lease().await;
        cluster.sync_presence().await;
        tokio::spawn(publish_loop(cluster.nats.clone(), out_rx));
        tokio::spawn(presence_writer(cluster.pool.clone(), cluster.node.clone(), writes_rx));
        tokio::spawn(read_loop(Arc::downgrade(hub), mine, "message from another node", |hub, m: NodeMsg| {
            hub.from_node(m)
        }));
        let c = Arc::clone(&cluster);
        tokio::spawn(read_loop(Arc::downgrade(hub), all, "cluster broadcast", move |hub, m: AllMsg| {
            all_msg(hub, &c, m)
        }));
        tokio::spawn(beat_loop(Arc::downgrade(hub), Arc::clone(&cluster), stop));
        tracing::info!(node = %node, nats = %cfg.nats_url, cluster = %cfg.name, "joined the cluster");
        Ok(cluster)
    }

    fn node_subject(&self, node: &str) -> String {
        format!("{}.node.{node}", self.prefix)
    }

    /// Whether NATS and PostgreSQL both answer: otherwise the node takes no new logins.
    pub fn ready(&self) -> Result<(), &'static str> {
        if self.nats.connection_state() != async_nats::connection::State::Connected {
            return Err("the server cannot reach its message bus (NATS)");
        }
        if !self.db_up.load(Ordering::Relaxed) {
            return Err("the server cannot reach its database");
        }
        Ok(())
    }

    /// Brings the cluster gauges of `/metrics` up to date.
    pub fn refresh_metrics(&self) {
        let nats_up = self.nats.connection_state() == async_nats::connection::State::Connected;
        self.metrics.cluster_nats_up.set(nats_up as i64);
        self.metrics.cluster_nodes.set(self.peers().len() as i64 + 1);
    }

    /// Nodes heard from lately (not counting this one).
    pub fn peers(&self) -> Vec<String> {
        let now = Instant::now();
        self.peers.lock().iter().filter(|(_, t)| now - **t < LOST_AFTER).map(|(n, _)| n.clone()).collect()
    }

    /// Whether `node` is this node or one heard from lately.
    pub fn alive(&self, node: &str) -> bool {
        node == &*self.node || self.peers.lock().get(node).is_some_and(|t| t.elapsed() < LOST_AFTER)
    }

    /// Queues a message for one node (never blocks; a full queue drops it).
    pub fn send(&self, node: &str, msg: &NodeMsg) {
        self.queue(self.node_subject(node), msg);
    }

    /// Queues messages for other nodes, those for one node as one NATS message, in order.
    pub fn send_all(&self, msgs: Vec<(Arc<str>, NodeMsg)>) {
        let mut by_node: Vec<(Arc<str>, Vec<NodeMsg>)> = Vec::new();
        for (node, msg) in msgs {
            match by_node.iter_mut().find(|(n, _)| *n == node) {
                Some((_, list)) => list.push(msg),
                None => by_node.push((node, vec![msg])),
            }
        }
        for (node, list) in by_node {
            let subject = self.node_subject(&node);
            if list.len() == 1 {
                self.queue(subject, &list[0]);
            } else {
                self.queue(subject, &list);
            }
        }
    }

    /// Queues a message for every node.
    pub fn broadcast(&self, msg: &AllMsg) {
        self.queue(format!("{}.all", self.prefix), msg);
    }

    fn queue(&self, subject: String, msg: &impl serde::Serialize) {
        let payload = match serde_json::to_vec(msg) {
            Ok(p) => Bytes::from(p),
            Err(e) => return tracing::error!("cannot encode a cluster message: {e}"),
        };
        if self.out.try_send(Outgoing { subject, payload }).is_err() {
            self.metrics.cluster_dropped.inc();
            tracing::warn!("cluster queue full: a message to another node was dropped");
        }
    }

    /// Records that this node holds `device` now; returns the node that held it before.
    /// Logins arriving together are written together (one statement), so that a storm of
    /// reconnections after an outage costs the database little.
    pub async fn register(
        &self,
        row: &PresenceRow,
        number: &str,
        conn_id: u64,
    ) -> Result<Option<String>, String> {
        let (done, answer) = tokio::sync::oneshot::channel();
        let op = PresenceOp::Up { row: row.clone(), number: number.to_string(), conn_id, done };
        self.writes.send(op).map_err(|_| "the presence writer stopped".to_string())?;
        answer.await.map_err(|_| "the presence writer stopped".to_string())?
    }

    /// Forgets `device` here, unless another connection (here or elsewhere) took it over.
    pub fn unregister(&self, device: i64, conn_id: u64) {
        let _ = self.writes.send(PresenceOp::Down { device, conn_id });
    }

    /// Whether a device of `number` is online somewhere, as far as this node's copy of the
    /// presence table knows. Called under the hub's lock: nothing that holds the presence
    /// lock waits for the hub's, so the two cannot deadlock.
    pub fn knows(&self, number: &str) -> bool {
        self.presence.lock().by_number.contains_key(number)
    }

    /// The online devices of a number on live nodes: from the copy in memory once it is
    /// loaded, from PostgreSQL before.
    pub async fn lookup(&self, number: &str) -> Result<Vec<PresenceRow>, sqlx::Error> {
        {
            let p = self.presence.lock();
            if p.synced {
                let rows = p.by_number.get(number).cloned().unwrap_or_default();
                drop(p);
                let rows: Vec<PresenceRow> = rows.into_iter().filter(|r| self.alive(&r.node)).collect();
                // None here may be a login whose broadcast is still on its way: ask the table.
                if !rows.is_empty() {
                    return Ok(rows);
                }
            }
        }
        self.lookup_db(number).await
    }

    async fn lookup_db(&self, number: &str) -> Result<Vec<PresenceRow>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT p.device_id, p.user_id, p.node_id, p.reported_ip, p.observed_ip \
             FROM presence p JOIN cluster_nodes n ON n.node_id = p.node_id \
             WHERE p.number = $1 AND n.expires_at > now()",
        )
        .bind(number)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                let node: String = r.get(2);
                let observed: String = r.get(4);
                let reported: Option<String> = r.get(3);
                Some(PresenceRow {
                    device: r.get(0),
                    user: r.get(1),
                    observed_ip: observed.parse::<IpAddr>().ok()?,
                    reported_ip: reported.and_then(|s| s.parse().ok()),
                    node,
                })
            })
            .filter(|row| self.alive(&row.node))
            .collect())
    }

    /// Loads the presence table into memory. Broadcasts that arrive meanwhile are newer
    /// than what the query read: a device they name keeps their word.
    async fn sync_presence(&self) {
        let _one = self.syncing.lock().await;
        {
            let mut p = self.presence.lock();
            p.synced = false;
            p.loading = true;
            p.touched.clear();
        }
        let rows = sqlx::query(
            "SELECT p.number, p.device_id, p.user_id, p.node_id, p.reported_ip, p.observed_ip \
             FROM presence p JOIN cluster_nodes n ON n.node_id = p.node_id WHERE n.expires_at > now()",
        )
        .fetch_all(&self.pool)
        .await;
        let mut p = self.presence.lock();
        p.loading = false;
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                // Lookups ask PostgreSQL until the next try.
                tracing::warn!("cannot load the presence table: {e}");
                return;
            }
        };
        let touched = std::mem::take(&mut p.touched);
        p.clear_except(&touched);
        for r in rows {
            let number: String = r.get(0);
            let observed: String = r.get(5);
            let reported: Option<String> = r.get(4);
            let Ok(observed_ip) = observed.parse::<IpAddr>() else { continue };
            let row = PresenceRow {
                device: r.get(1),
                user: r.get(2),
                node: r.get(3),
                reported_ip: reported.and_then(|s| s.parse().ok()),
                observed_ip,
            };
            if !touched.contains(&row.device) {
                p.insert(number, row);
            }
        }
        p.synced = true;
        tracing::debug!(devices = p.number_of.len(), "presence table loaded");
    }

    /// Tells every node (this one too) that a device is online here.
    pub fn announce_online(&self, number: &str, row: PresenceRow) {
        self.presence.lock().insert(number.to_string(), row.clone());
        self.broadcast(&AllMsg::Online { number: number.to_string(), row });
    }

    /// Tells every node that a device's connection here ended.
    pub fn announce_offline(&self, device: i64) {
        self.presence.lock().remove(device, &self.node);
        self.broadcast(&AllMsg::Offline { device, node: self.node.to_string() });
    }

    async fn renew_lease(&self) {
        let done = sqlx::query(&format!(
            "INSERT INTO cluster_nodes (node_id, expires_at) VALUES ($1, now() + interval '{LEASE}') \
             ON CONFLICT (node_id) DO UPDATE SET expires_at = EXCLUDED.expires_at"
        ))
        .bind(&*self.node)
        .execute(&self.lease_pool)
        .await;
        let up = match done {
            Ok(_) => true,
            Err(e) => {
                if self.db_up.load(Ordering::Relaxed) {
                    tracing::error!("cluster: PostgreSQL unreachable, refusing new logins: {e}");
                }
                false
            }
        };
        if up && !self.db_up.load(Ordering::Relaxed) {
            tracing::info!("cluster: PostgreSQL reachable");
        }
        self.db_up.store(up, Ordering::Relaxed);
        self.metrics.cluster_db_up.set(up as i64);
    }

    /// Removes the rows of nodes long gone (they stopped counting when their lease ran out).
    async fn collect_garbage(&self) {
        let _ = sqlx::query(
            "DELETE FROM presence WHERE node_id IN \
             (SELECT node_id FROM cluster_nodes WHERE expires_at < now() - interval '1 minute')",
        )
        .execute(&self.pool)
        .await;
        let _ = sqlx::query("DELETE FROM cluster_nodes WHERE expires_at < now() - interval '1 minute'")
            .execute(&self.pool)
            .await;
    }

    /// Leaves the cluster: the others forget this node at once, its rows stop counting.
    pub async fn leave(&self) {
        self.broadcast(&AllMsg::Left { node: self.node.to_string() });
        let _ = sqlx::query("DELETE FROM presence WHERE node_id = $1")
            .bind(&*self.node)
            .execute(&self.pool)
            .await;
        let _ = sqlx::query("DELETE FROM cluster_nodes WHERE node_id = $1")
            .bind(&*self.node)
            .execute(&self.pool)
            .await;
        // Let the publisher send the goodbye.
        let _ = tokio::time::timeout(Duration::from_millis(500), self.nats.flush()).await;
    }
}

/// Most messages sent as one NATS message.
const BATCH: usize = 64;

/// Publishes queued messages in order. Under load several wait at once: those for one
/// subject go out as one NATS message (a JSON array), which costs NATS and both nodes far
/// less than one message each.
async fn publish_loop(nats: async_nats::Client, mut rx: mpsc::Receiver<Outgoing>) {
    let mut waiting: Vec<Outgoing> = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut waiting, BATCH).await > 0 {
        let mut rest = waiting.drain(..).peekable();
        while let Some(first) = rest.next() {
            let mut same = vec![first.payload];
            while let Some(next) = rest.next_if(|m| m.subject == first.subject) {
                same.push(next.payload);
            }
            let payload = join_payloads(same);
            if let Err(e) = nats.publish(first.subject, payload).await {
                tracing::debug!("cluster publish failed: {e}");
            }
        }
    }
}

/// Several payloads for one subject as one: a JSON array of their messages. A payload that
/// is a batch already gives its messages, not itself (a batch in a batch is unreadable).
fn join_payloads(mut payloads: Vec<Bytes>) -> Bytes {
    if payloads.len() == 1 {
        return payloads.pop().unwrap_or_default();
    }
    let mut joined = Vec::with_capacity(payloads.iter().map(|p| p.len() + 1).sum::<usize>() + 2);
    joined.push(b'[');
    for p in &payloads {
        let messages = match p.strip_prefix(b"[").and_then(|p| p.strip_suffix(b"]")) {
            Some(inner) => inner,
            None => p,
        };
        if messages.is_empty() {
            continue;
        }
        if joined.len() > 1 {
            joined.push(b',');
        }
        joined.extend_from_slice(messages);
    }
    joined.push(b']');
    Bytes::from(joined)
}

/// One message, or several sent as one (see [`publish_loop`]).
fn decode_batch<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<Vec<T>, serde_json::Error> {
    if payload.first() == Some(&b'[') {
        serde_json::from_slice(payload)
    } else {
        serde_json::from_slice(payload).map(|one| vec![one])
    }
}

/// Reads one subscription until the hub is gone, handing each message (or each of a batch)
/// to `handle`.
async fn read_loop<T: serde::de::DeserializeOwned>(
    hub: Weak<Hub>,
    mut sub: async_nats::Subscriber,
    what: &'static str,
    handle: impl Fn(&Arc<Hub>, T),
) {
    use futures_util::StreamExt;
    while let Some(msg) = sub.next().await {
        let Some(hub) = hub.upgrade() else { break };
        match decode_batch::<T>(&msg.payload) {
            Ok(batch) => batch.into_iter().for_each(|m| handle(&hub, m)),
            Err(e) => tracing::warn!("unreadable {what}: {e}"),
        }
    }
}

fn all_msg(hub: &Arc<Hub>, cluster: &Arc<Cluster>, decoded: AllMsg) {
    match decoded {
        AllMsg::Beat { node } if node != *cluster.node => {
            let new = cluster.peers.lock().insert(node.clone(), Instant::now()).is_none();
            if new {
                tracing::info!(node = %node, "cluster: node joined");
                // Back after being lost (its rows were dropped) or new: read them again.
                let c = Arc::clone(cluster);
                tokio::spawn(async move { c.sync_presence().await });
            }
        }
        AllMsg::Beat { .. } => {}
        AllMsg::Left { node } if node != *cluster.node => {
            if cluster.peers.lock().remove(&node).is_some() {
                tracing::info!(node = %node, "cluster: node left");
                cluster.presence.lock().drop_node(&node);
                hub.node_lost(&node);
            }
        }
        AllMsg::Left { .. } => {}
        AllMsg::User { node, user, change } if node != *cluster.node => {
            hub.user_changed_elsewhere(user, change)
        }
        AllMsg::User { .. } => {}
        AllMsg::Kick { device, code, reason } => hub.kick_local(device, code, &reason),
        AllMsg::Online { number, row } => cluster.presence.lock().insert(number, row),
        AllMsg::Offline { device, node } => cluster.presence.lock().remove(device, &node),
    }
}

async fn beat_loop(hub: Weak<Hub>, cluster: Arc<Cluster>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(BEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0u64;
    let mut was_connected = true;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        let Some(hub) = hub.upgrade() else { break };
        cluster.broadcast(&AllMsg::Beat { node: cluster.node.to_string() });
        // Lease renewals and garbage collection must not hold up the beat.
        if n.is_multiple_of(2) {
            let c = Arc::clone(&cluster);
            tokio::spawn(async move {
                c.renew_lease().await;
                if n.is_multiple_of(120) {
                    c.collect_garbage().await;
                }
            });
        }
        n += 1;
        let lost: Vec<String> = {
            let mut peers = cluster.peers.lock();
            let lost: Vec<String> =
                peers.iter().filter(|(_, t)| t.elapsed() >= LOST_AFTER).map(|(n, _)| n.clone()).collect();
            for l in &lost {
                peers.remove(l);
            }
            lost
        };
        for node in lost {
            tracing::warn!(node = %node, "cluster: node lost (no heartbeat for 2 s)");
            cluster.presence.lock().drop_node(&node);
            hub.node_lost(&node);
        }
        // Broadcasts were missed while NATS was away: load the table again.
        let connected = cluster.nats.connection_state() == async_nats::connection::State::Connected;
        let unsynced = !cluster.presence.lock().synced && !cluster.presence.lock().loading;
        if connected && (!was_connected || unsynced) {
            let c = Arc::clone(&cluster);
            tokio::spawn(async move { c.sync_presence().await });
        }
        was_connected = connected;
        cluster.refresh_metrics();
        hub.sweep_remote();
    }
}

/// The node a session id names as its authority (`NODE.RANDOM`), if any.
pub fn authority_of(id: &crate::protocol::SessionId) -> Option<&str> {
    id.0.split_once('.').map(|(node, _)| node)
}

/// The presence table as one node knows it.
#[derive(Default)]
struct Presence {
    by_number: HashMap<String, Vec<PresenceRow>>,
    number_of: HashMap<i64, String>,
    /// Loaded, and kept current since.
    synced: bool,
    loading: bool,
    /// Devices broadcasts named while the table was loading.
    touched: std::collections::HashSet<i64>,
}

impl Presence {
    fn insert(&mut self, number: String, row: PresenceRow) {
        if self.loading {
            self.touched.insert(row.device);
        }
        self.forget(row.device);
        self.number_of.insert(row.device, number.clone());
        self.by_number.entry(number).or_default().push(row);
    }

    /// A device's connection at `node` ended (a newer one elsewhere stays).
    fn remove(&mut self, device: i64, node: &str) {
        if self.loading {
            self.touched.insert(device);
        }
        let here = self
            .number_of
            .get(&device)
            .and_then(|n| self.by_number.get(n))
            .is_some_and(|rows| rows.iter().any(|r| r.device == device && r.node == node));
        if here {
            self.forget(device);
        }
    }

    fn forget(&mut self, device: i64) {
        if let Some(number) = self.number_of.remove(&device)
            && let Some(rows) = self.by_number.get_mut(&number)
        {
            rows.retain(|r| r.device != device);
            if rows.is_empty() {
                self.by_number.remove(&number);
            }
        }
    }

    fn drop_node(&mut self, node: &str) {
        let gone: Vec<i64> =
            self.by_number.values().flatten().filter(|r| r.node == node).map(|r| r.device).collect();
        for d in gone {
            self.forget(d);
        }
    }

    /// Forgets everything but the devices in `keep`.
    fn clear_except(&mut self, keep: &std::collections::HashSet<i64>) {
        let drop: Vec<i64> = self.number_of.keys().filter(|d| !keep.contains(d)).copied().collect();
        for d in drop {
            self.forget(d);
        }
    }
}

/// Where the answer to a login's presence write goes: the node that held the device before.
type Registered = tokio::sync::oneshot::Sender<Result<Option<String>, String>>;

enum PresenceOp {
    Up {
        row: PresenceRow,
        number: String,
        conn_id: u64,
        done: tokio::sync::oneshot::Sender<Result<Option<String>, String>>,
    },
    Down {
        device: i64,
        conn_id: u64,
    },
}

/// Most presence changes written by one statement.
const WRITE_BATCH: usize = 512;

/// Writes logins and logouts to the presence table, as many as are waiting in one statement
/// each (the unbounded queue holds at most one entry per connection of this node).
async fn presence_writer(pool: PgPool, node: Arc<str>, mut rx: mpsc::UnboundedReceiver<PresenceOp>) {
    let mut ops = Vec::with_capacity(WRITE_BATCH);
    while rx.recv_many(&mut ops, WRITE_BATCH).await > 0 {
        let mut ups: Vec<(PresenceRow, String, u64, Registered)> = Vec::new();
        let mut downs: Vec<(i64, i64)> = Vec::new();
        for op in ops.drain(..) {
            match op {
                PresenceOp::Up { row, number, conn_id, done } => ups.push((row, number, conn_id, done)),
                PresenceOp::Down { device, conn_id } => downs.push((device, conn_id as i64)),
            }
        }
        if !downs.is_empty() {
            let (d, c): (Vec<i64>, Vec<i64>) = downs.into_iter().unzip();
            let done = sqlx::query(
                "DELETE FROM presence p USING UNNEST($1::bigint[], $2::bigint[]) AS t(d, c) \
                 WHERE p.device_id = t.d AND p.conn_id = t.c AND p.node_id = $3",
            )
            .bind(&d)
            .bind(&c)
            .bind(&*node)
            .execute(&pool)
            .await;
            if let Err(e) = done {
                // A live node's stale row is corrected by the device's next login; the rows
                // of a node that stops stop counting with its lease.
                tracing::warn!(devices = d.len(), "cannot remove devices from the presence table: {e}");
            }
        }
        if ups.is_empty() {
            continue;
        }
        // One row per device (the newest): a statement may not upsert a row twice.
        let mut seen = std::collections::HashSet::new();
        let mut rows = Vec::new();
        for (row, number, conn_id, _) in ups.iter().rev() {
            if seen.insert(row.device) {
                rows.push((row, number, *conn_id));
            }
        }
        let result = sqlx::query(
            "WITH input AS (SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], \
                    $5::text[], $6::text[]) AS t(device_id, user_id, number, conn_id, reported_ip, observed_ip)), \
             old AS (SELECT p.device_id, p.node_id FROM presence p JOIN input i ON i.device_id = p.device_id), \
             up AS (INSERT INTO presence (device_id, user_id, number, node_id, conn_id, reported_ip, observed_ip) \
                    SELECT device_id, user_id, number, $7, conn_id, reported_ip, observed_ip FROM input \
                    ON CONFLICT (device_id) DO UPDATE SET user_id = EXCLUDED.user_id, number = EXCLUDED.number, \
                    node_id = EXCLUDED.node_id, conn_id = EXCLUDED.conn_id, \
                    reported_ip = EXCLUDED.reported_ip, observed_ip = EXCLUDED.observed_ip) \
             SELECT device_id, node_id FROM old",
        )
        .bind(rows.iter().map(|r| r.0.device).collect::<Vec<i64>>())
        .bind(rows.iter().map(|r| r.0.user).collect::<Vec<i64>>())
        .bind(rows.iter().map(|r| r.1.clone()).collect::<Vec<String>>())
        .bind(rows.iter().map(|r| r.2 as i64).collect::<Vec<i64>>())
        .bind(rows.iter().map(|r| r.0.reported_ip.map(|ip| ip.to_string())).collect::<Vec<Option<String>>>())
        .bind(rows.iter().map(|r| r.0.observed_ip.to_string()).collect::<Vec<String>>())
        .bind(&*node)
        .fetch_all(&pool)
        .await;
        match result {
            Ok(old) => {
                let old: HashMap<i64, String> = old.into_iter().map(|r| (r.get(0), r.get(1))).collect();
                for (row, _, _, done) in ups {
                    let _ = done.send(Ok(old.get(&row.device).cloned()));
                }
            }
            Err(e) => {
                let why = e.to_string();
                for (_, _, _, done) in ups {
                    let _ = done.send(Err(why.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(device: i64) -> NodeMsg {
        NodeMsg::Detach { device, session: crate::protocol::SessionId(format!("n.{device}")) }
    }

    #[test]
    fn payloads_joined_for_one_subject_read_back_as_every_message_in_order() {
        let one = |m: &NodeMsg| Bytes::from(serde_json::to_vec(m).expect("encode"));
        let batch = |ms: &[NodeMsg]| Bytes::from(serde_json::to_vec(ms).expect("encode"));
        // A single message, a batch from `send_all`, and another single one: under load
        // the publisher joins them into one NATS message.
        let joined = join_payloads(vec![one(&msg(1)), batch(&[msg(2), msg(3)]), one(&msg(4))]);
        let read: Vec<NodeMsg> = decode_batch(&joined).expect("a joined payload is readable");
        assert_eq!(read, vec![msg(1), msg(2), msg(3), msg(4)]);
        // Alone, a payload goes out as it is.
        assert_eq!(decode_batch::<NodeMsg>(&join_payloads(vec![one(&msg(5))])).expect("one"), vec![msg(5)]);
        let two = join_payloads(vec![batch(&[msg(6), msg(7)]), batch(&[msg(8)])]);
        assert_eq!(decode_batch::<NodeMsg>(&two).expect("two"), vec![msg(6), msg(7), msg(8)]);
    }
}
