//! Prometheus metrics served at `/metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

pub struct Metrics {
    registry: Registry,
    pub online_devices: Gauge,
    pub online_users: Gauge,
    pub connections: Gauge,
    pub access_requests: Counter,
    pub outcomes: Family<Labels, Counter>,
    pub protocol_errors: Family<Labels, Counter>,
    pub logins: Family<Labels, Counter>,
    /// Access requests answered `unavailable` because their callee was rung too much.
    pub rings_refused: Counter,
    /// Registrations, by result.
    pub registrations: Family<Labels, Counter>,
    /// Open TCP connections (HTTP, WebSocket, TLS or not).
    pub tcp_connections: Gauge,
    /// Connections closed at once, by reason (`per_address`, `fd_headroom`).
    pub connections_refused: Family<Labels, Counter>,
    /// From an access request arriving to its initiations being queued for the callee.
    pub dispatch_seconds: Histogram,
    /// From an initiation to the callee's answer.
    pub answer_seconds: Histogram,
    /// TURN allocations held now.
    pub relay_allocations: Gauge,
    /// Bytes relayed, by way (`to_peer`, `to_client`).
    pub relay_bytes: Family<Labels, Counter>,
    /// Relay requests refused, by reason.
    pub relay_refusals: Family<Labels, Counter>,
    /// Relayed packets dropped, by reason.
    pub relay_dropped: Family<Labels, Counter>,
    /// Cluster (`--nats`): nodes alive, counting this one (1 on a single node).
    pub cluster_nodes: Gauge,
    /// Cluster: 1 while NATS is connected.
    pub cluster_nats_up: Gauge,
    /// Cluster: 1 while PostgreSQL renews this node's lease.
    pub cluster_db_up: Gauge,
    /// Cluster: messages to other nodes dropped because the queue was full.
    pub cluster_dropped: Counter,
    /// Cluster: sessions ended because a node they ran through was lost.
    pub cluster_sessions_lost: Counter,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sidecall");
        let online_devices = Gauge::default();
        let online_users = Gauge::default();
        let connections = Gauge::default();
        let access_requests = Counter::default();
        let outcomes = Family::<Labels, Counter>::default();
        let protocol_errors = Family::<Labels, Counter>::default();
        let logins = Family::<Labels, Counter>::default();
        let registrations = Family::<Labels, Counter>::default();
        let rings_refused = Counter::default();
        registry.register(
            "rings_refused",
            "Access requests not rung because their callee was rung too much",
            rings_refused.clone(),
        );
        let tcp_connections = Gauge::default();
        let connections_refused = Family::<Labels, Counter>::default();
        registry.register("registrations", "Registrations, by result", registrations.clone());
        registry.register("tcp_connections", "Open TCP connections", tcp_connections.clone());
        registry.register(
            "connections_refused",
            "Connections closed at once, by reason",
            connections_refused.clone(),
        );
        let dispatch_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        let answer_seconds = Histogram::new(exponential_buckets(0.05, 2.0, 12));
        registry.register("online_devices", "Devices logged in over a WebSocket", online_devices.clone());
        registry.register("online_users", "Users with at least one online device", online_users.clone());
        registry.register(
            "websocket_connections",
            "Open WebSocket connections, logged in or not",
            connections.clone(),
        );
        registry.register("access_requests", "Access requests received", access_requests.clone());
        registry.register("access_outcomes", "Access request outcomes told to callers", outcomes.clone());
        registry.register("protocol_errors", "Errors sent to clients, by code", protocol_errors.clone());
        registry.register("logins", "Login attempts, by result", logins.clone());
        registry.register(
            "initiation_dispatch_seconds",
            "Time from access request to initiation queued",
            dispatch_seconds.clone(),
        );
        registry.register("answer_seconds", "Time from initiation to answer", answer_seconds.clone());
        let relay_allocations = Gauge::default();
        let relay_bytes = Family::<Labels, Counter>::default();
        let relay_refusals = Family::<Labels, Counter>::default();
        let relay_dropped = Family::<Labels, Counter>::default();
        registry.register("relay_allocations", "TURN allocations held now", relay_allocations.clone());
        registry.register("relay_bytes", "Bytes relayed by the TURN relay, by way", relay_bytes.clone());
        registry.register("relay_refusals", "TURN requests refused, by reason", relay_refusals.clone());
        registry.register("relay_dropped", "Relayed packets dropped, by reason", relay_dropped.clone());
        let (cluster_nodes, cluster_nats_up, cluster_db_up) =
            (Gauge::default(), Gauge::default(), Gauge::default());
        let (cluster_dropped, cluster_sessions_lost) = (Counter::default(), Counter::default());
        cluster_nodes.set(1);
        registry.register("cluster_nodes", "Server nodes alive, counting this one", cluster_nodes.clone());
        registry.register(
            "cluster_nats_up",
            "1 while NATS is connected (cluster only)",
            cluster_nats_up.clone(),
        );
        registry.register(
            "cluster_db_up",
            "1 while PostgreSQL renews this node's lease (cluster only)",
            cluster_db_up.clone(),
        );
        registry.register(
            "cluster_dropped",
            "Messages to other nodes dropped because the queue was full",
            cluster_dropped.clone(),
        );
        registry.register(
            "cluster_sessions_lost",
            "Sessions ended because a node they ran through was lost",
            cluster_sessions_lost.clone(),
        );
        Metrics {
            registry,
            online_devices,
            online_users,
            connections,
            access_requests,
            outcomes,
            protocol_errors,
            logins,
            registrations,
            rings_refused,
            tcp_connections,
            connections_refused,
            dispatch_seconds,
            answer_seconds,
            relay_allocations,
            relay_bytes,
            relay_refusals,
            relay_dropped,
            cluster_nodes,
            cluster_nats_up,
            cluster_db_up,
            cluster_dropped,
            cluster_sessions_lost,
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            tracing::error!("cannot encode metrics: {e}");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
