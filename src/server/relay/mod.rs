//! The server's own TURN relay (RFC 5766 over UDP, with STUN binding): when two devices
//! cannot reach each other directly, or one of them hides its address, their data goes
//! through here and neither learns the other's address.
//!
//! Built on the protocol types of `rtc-stun` / `rtc-turn` (the same crates webrtc's TURN
//! client uses), with the policy a public relay needs and a library relay lacks:
//! - credentials are the TURN REST form minted per device ([`creds`]), checked with the
//!   long-term mechanism (401 with realm and nonce, stateless nonces, 438 when stale);
//! - allocations exist only for devices in a running session, end with it, and are capped
//!   per user, as is the bandwidth a user's allocations relay;
//! - peers are checked by [`policy::PeerPolicy`]: no loopback, private, link-local, CGNAT
//!   or multicast peers, and towards the relay's own addresses only the allocations of the
//!   other device of the same session (delivered inside the relay, no hairpin needed).

mod advert;
pub mod creds;
mod io;
pub mod policy;
pub mod sdp;

pub use advert::{RelayIce, host_of};

use crate::server::metrics::Metrics;
use creds::Secret;
use parking_lot::Mutex;
use policy::{PeerPolicy, Refusal};
use rtc_stun::attributes::*;
use rtc_stun::error_code::*;
use rtc_stun::integrity::MessageIntegrity;
use rtc_stun::message::*;
use rtc_stun::textattrs::TextAttribute;
use rtc_stun::xoraddr::XorMappedAddress;
use rtc_turn::proto::chandata::ChannelData;
use rtc_turn::proto::channum::ChannelNumber;
use rtc_turn::proto::data::Data;
use rtc_turn::proto::lifetime::Lifetime;
use rtc_turn::proto::peeraddr::PeerAddress;
use rtc_turn::proto::relayaddr::RelayedAddress;
use rtc_turn::proto::reqtrans::RequestedTransport;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::UdpSocket;

/// How the relay runs.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// The UDP listener (TURN and STUN).
    pub listen: SocketAddr,
    /// Ports relay allocations bind on.
    pub ports: RangeInclusive<u16>,
    /// The address to advertise when the server sits behind a 1:1 NAT.
    pub public_ip: Option<IpAddr>,
    /// Allow private, loopback and link-local peers (a LAN deployment, tests).
    pub allow_private: bool,
    pub realm: String,
    /// How long minted credentials are valid.
    pub credential_ttl: Duration,
    /// Allocations one user may hold at once.
    pub max_allocations_per_user: usize,
    /// Bytes per second one user's allocations may relay together (each way).
    pub user_bandwidth: u64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 3478)),
            ports: 49152..=65535,
            public_ip: None,
            allow_private: false,
            realm: "sidecall".into(),
            credential_ttl: Duration::from_secs(6 * 3600),
            max_allocations_per_user: 12,
            // 64 MB/s: enough for any one session, and a ceiling a flood cannot pass.
            user_bandwidth: 64_000_000,
        }
    }
}

/// What the relay asks of the registry.
pub trait SessionGate: Send + Sync {
    /// The user of `device` and the other device of its running (accepted) session, if any.
    fn session_peer(&self, device: i64) -> Option<(i64, i64)>;
}

const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);
const MAX_LIFETIME: Duration = Duration::from_secs(3600);
const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
const NONCE_LIFETIME: u64 = 3600;
/// Largest UDP payload relayed.
const MAX_DATAGRAM: usize = 1500 + 64;

/// A running relay; dropping it does not stop it, [`Relay::shutdown`] does.
#[derive(Clone)]
pub struct Relay {
    shared: Arc<Shared>,
}

/// The per-packet counters, looked up once (a labelled lookup per packet costs more than
/// the forwarding itself).
struct Counters {
    to_peer: prometheus_client::metrics::counter::Counter,
    to_client: prometheus_client::metrics::counter::Counter,
    /// Dropped over a user's bandwidth: counted once per packet of a flood.
    over_bandwidth: prometheus_client::metrics::counter::Counter,
}

struct Shared {
    counters: Counters,
    cfg: RelayConfig,
    secret: Secret,
    gate: Arc<dyn SessionGate>,
    policy: PeerPolicy,
    socket: Arc<UdpSocket>,
    /// Batched I/O on the listener (recvmmsg/GRO in, GSO out), where the system has it.
    udp: quinn_udp::UdpSocketState,
    /// The listener's address as bound.
    local: SocketAddr,
    /// The address allocations bind on (the listener's, or all interfaces' first one).
    relay_bind_ip: IpAddr,
    state: Mutex<State>,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct State {
    /// By the client's transport address (UDP: one allocation per 5-tuple).
    allocs: HashMap<SocketAddr, Arc<Alloc>>,
    /// Relay port → client address.
    by_port: HashMap<u16, SocketAddr>,
    per_user: HashMap<i64, usize>,
    /// Addresses allocations are on (bound and advertised), with how many use each.
    own_ips: HashMap<IpAddr, usize>,
    buckets: HashMap<i64, Arc<Mutex<Bucket>>>,
    next_port: u16,
    tasks: Vec<tokio::task::AbortHandle>,
}

struct Alloc {
    client: SocketAddr,
    device: i64,
    user: i64,
    peer_device: i64,
    relay: Arc<UdpSocket>,
    /// As advertised in XOR-RELAYED-ADDRESS.
    relay_addr: SocketAddr,
    /// The local address the relay port is bound on.
    bound_ip: IpAddr,
    live: Mutex<Live>,
    bucket: Arc<Mutex<Bucket>>,
    reader: Mutex<Option<tokio::task::AbortHandle>>,
}

struct Live {
    expires: Instant,
    permissions: HashMap<IpAddr, Instant>,
    channels: HashMap<u16, (SocketAddr, Instant)>,
    by_peer: HashMap<SocketAddr, u16>,
}

/// A leaky bucket of bytes per second.
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u64) -> Self {
        Bucket { rate: rate as f64, tokens: rate as f64, at: Instant::now() }
    }

    fn take(&mut self, n: usize) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.rate);
        self.at = now;
        if self.tokens >= n as f64 {
            self.tokens -= n as f64;
            true
        } else {
            false
        }
    }
}

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(
        "cannot listen for TURN on UDP {addr}: {source} (choose another with --relay-listen, or --no-relay)"
    )]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("the relay's crypto provider failed: {0}")]
    Crypto(String),
    #[error("cannot keep the relay secret in {dir}: {source}")]
    Secret { dir: String, source: std::io::Error },
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Relay {
    /// Binds the listener and starts serving.
    pub async fn start(
        cfg: RelayConfig,
        secret: Secret,
        gate: Arc<dyn SessionGate>,
        metrics: Arc<Metrics>,
    ) -> Result<Relay, RelayError> {
        let socket = UdpSocket::bind(cfg.listen)
            .await
            .map_err(|source| RelayError::Bind { addr: cfg.listen, source })?;
        big_buffers(&socket);
        let udp = quinn_udp::UdpSocketState::new((&socket).into())
            .map_err(|source| RelayError::Bind { addr: cfg.listen, source })?;
        let local = socket.local_addr().map_err(|source| RelayError::Bind { addr: cfg.listen, source })?;
        let relay_bind_ip = local.ip();
        let mut relay_ips = vec![relay_bind_ip];
        relay_ips.extend(cfg.public_ip);
        let policy = PeerPolicy { allow_private: cfg.allow_private, relay_ips };
        let next_port = *cfg.ports.start();
        // One statement each: the family's lock guard lives to the end of its statement.
        let to_peer = metrics.relay_bytes.get_or_create(&vec![("way", "to_peer")]).clone();
        let to_client = metrics.relay_bytes.get_or_create(&vec![("way", "to_client")]).clone();
        let over_bandwidth =
            metrics.relay_dropped.get_or_create(&vec![("reason", Refusal::Bandwidth.label())]).clone();
        let counters = Counters { to_peer, to_client, over_bandwidth };
        let shared = Arc::new(Shared {
            counters,
            secret,
            gate,
            policy,
            socket: Arc::new(socket),
            udp,
            local,
            relay_bind_ip,
            state: Mutex::new(State { next_port, ..Default::default() }),
            metrics,
            cfg,
        });
        let listener = tokio::spawn(io::serve(shared.clone()));
        let sweeper = tokio::spawn(sweep(Arc::downgrade(&shared)));
        shared.state.lock().tasks.extend([listener.abort_handle(), sweeper.abort_handle()]);
        tracing::info!(listen = %local, ports = ?shared.cfg.ports, public_ip = ?shared.cfg.public_ip, "TURN relay listening");
        Ok(Relay { shared })
    }

    /// The listener's address as bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local
    }

    pub fn config(&self) -> &RelayConfig {
        &self.shared.cfg
    }

    /// The address clients should use for `host` (the name or address they reached the
    /// server by): the public IP if one is configured, else that host, at the relay's port.
    pub fn urls_for(&self, host: &str) -> Vec<String> {
        let port = self.shared.local.port();
        let host = match self.shared.cfg.public_ip {
            Some(IpAddr::V6(ip)) => format!("[{ip}]"),
            Some(ip) => ip.to_string(),
            None if !self.shared.local.ip().is_unspecified() => match self.shared.local.ip() {
                IpAddr::V6(ip) => format!("[{ip}]"),
                ip => ip.to_string(),
            },
            None => host.to_string(),
        };
        vec![format!("stun:{host}:{port}"), format!("turn:{host}:{port}?transport=udp")]
    }

    /// A credential for `device`.
    pub fn mint(&self, device: i64) -> creds::Credential {
        self.shared.secret.mint(device, unix_now(), self.shared.cfg.credential_ttl.as_secs())
    }

    /// Whether `ip` is one of the relay's own addresses (where its allocations are).
    pub fn is_own_ip(&self, ip: IpAddr) -> bool {
        self.shared.is_own(ip)
    }

    /// Allocations held now.
    pub fn allocations(&self) -> usize {
        self.shared.state.lock().allocs.len()
    }

    /// Ends every allocation and stops listening.
    pub fn shutdown(&self) {
        let mut st = self.shared.state.lock();
        for t in st.tasks.drain(..) {
            t.abort();
        }
        let allocs: Vec<_> = st.allocs.drain().map(|(_, a)| a).collect();
        st.by_port.clear();
        st.per_user.clear();
        drop(st);
        for a in allocs {
            a.stop();
        }
        self.shared.metrics.relay_allocations.set(0);
    }
}

impl Alloc {
    fn stop(&self) {
        if let Some(r) = self.reader.lock().take() {
            r.abort();
        }
    }
}

/// Every half second: allocations whose lifetime ran out, or whose session ended, go.
async fn sweep(shared: std::sync::Weak<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let Some(s) = shared.upgrade() else { return };
        let now = Instant::now();
        let all: Vec<Arc<Alloc>> = s.state.lock().allocs.values().cloned().collect();
        for a in all {
            let expired = a.live.lock().expires <= now;
            let session_over = s.gate.session_peer(a.device).is_none_or(|(_, peer)| peer != a.peer_device);
            if expired || session_over {
                tracing::debug!(client = %a.client, expired, session_over, "relay allocation ends");
                s.remove(&a.client);
            }
        }
    }
}

impl Shared {
    fn is_own(&self, ip: IpAddr) -> bool {
        self.policy.relay_ips.contains(&ip) || self.state.lock().own_ips.contains_key(&ip)
    }

    fn dropped(&self, reason: &'static str) {
        self.metrics.relay_dropped.get_or_create(&vec![("reason", reason)]).inc();
    }

    fn refuse(&self, r: Refusal) {
        self.metrics.relay_refusals.get_or_create(&vec![("reason", r.label())]).inc();
    }

    fn remove(&self, client: &SocketAddr) {
        let mut st = self.state.lock();
        let Some(a) = st.allocs.remove(client) else { return };
        st.by_port.remove(&a.relay_addr.port());
        for ip in [a.relay_addr.ip(), a.bound_ip] {
            if let Some(n) = st.own_ips.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    st.own_ips.remove(&ip);
                }
            }
        }
        if let Some(n) = st.per_user.get_mut(&a.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                st.per_user.remove(&a.user);
                st.buckets.remove(&a.user);
            }
        }
        self.metrics.relay_allocations.set(st.allocs.len() as i64);
        drop(st);
        a.stop();
    }

    fn nonce(&self, client: SocketAddr, issued: u64) -> String {
        let mac = self.secret.mac(format!("nonce:{issued}:{client}").as_bytes());
        let tag: String = mac[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("{issued:x}-{tag}")
    }

    fn nonce_ok(&self, client: SocketAddr, nonce: &str, now: u64) -> bool {
        let Some((issued, _)) = nonce.split_once('-') else { return false };
        let Ok(issued) = u64::from_str_radix(issued, 16) else { return false };
        issued + NONCE_LIFETIME > now
            && rtc_crypto::constant_time_eq(self.nonce(client, issued).as_bytes(), nonce.as_bytes())
    }

    fn send_to_client(&self, buf: &[u8], client: SocketAddr) {
        // Inside the listener's batch: queued, and sent with the batch's other datagrams.
        let queued = io::OUTBOX.with_borrow_mut(|o| match o {
            Some(o) => {
                o.push(client, buf);
                true
            }
            None => false,
        });
        if queued {
            return;
        }
        match self.socket.try_send_to(buf, client) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                self.dropped("socket_full");
            }
            Err(e) => tracing::debug!(%client, "relay send failed: {e}"),
        }
    }

    /// One datagram on the listener.
    fn on_datagram(self: &Arc<Self>, from: SocketAddr, packet: &[u8]) {
        if ChannelData::is_channel_data(packet) {
            from_client_channel(self, from, packet);
        } else if is_message(packet) {
            let mut m = Message::new();
            if m.unmarshal_binary(packet).is_err() {
                self.refuse(Refusal::BadRequest);
                return;
            }
            handle(self, from, m);
        }
        // Anything else is not for us: dropped without an answer.
    }
}

fn is_message(b: &[u8]) -> bool {
    b.len() >= MESSAGE_HEADER_SIZE && u32::from_be_bytes([b[4], b[5], b[6], b[7]]) == MAGIC_COOKIE
}

fn reply(s: &Shared, to: SocketAddr, setters: &[Box<dyn Setter + '_>]) {
    let mut out = Message::new();
    match out.build(setters) {
        Ok(()) => s.send_to_client(&out.raw, to),
        Err(e) => tracing::warn!("cannot build a STUN answer: {e}"),
    }
}

fn error_reply(s: &Shared, to: SocketAddr, req: &Message, code: ErrorCode, reason: &str, with_nonce: bool) {
    let typ = MessageType::new(req.typ.method, CLASS_ERROR_RESPONSE);
    let err = ErrorCodeAttribute { code, reason: reason.as_bytes().to_vec() };
    let mut setters: Vec<Box<dyn Setter>> = vec![Box::new(req.transaction_id), Box::new(typ), Box::new(err)];
    if with_nonce {
        setters.push(Box::new(TextAttribute::new(ATTR_REALM, s.cfg.realm.clone())));
        setters.push(Box::new(TextAttribute::new(ATTR_NONCE, s.nonce(to, unix_now()))));
    }
    reply(s, to, &setters);
}

/// A request that passed the long-term credential check.
struct Authed {
    device: i64,
    key: Vec<u8>,
}

fn authenticate(s: &Shared, from: SocketAddr, m: &mut Message) -> Option<Authed> {
    if !m.contains(ATTR_MESSAGE_INTEGRITY) {
        error_reply(s, from, m, CODE_UNAUTHORIZED, "Unauthorized", true);
        return None;
    }
    let (Ok(user), Ok(realm), Ok(nonce)) = (
        TextAttribute::get_from_as(m, ATTR_USERNAME),
        TextAttribute::get_from_as(m, ATTR_REALM),
        TextAttribute::get_from_as(m, ATTR_NONCE),
    ) else {
        s.refuse(Refusal::BadRequest);
        error_reply(s, from, m, CODE_BAD_REQUEST, "Bad Request", false);
        return None;
    };
    if !s.nonce_ok(from, &nonce.text, unix_now()) {
        error_reply(s, from, m, CODE_STALE_NONCE, "Stale Nonce", true);
        return None;
    }
    let refused = |s: &Shared, m: &Message| {
        s.refuse(Refusal::WrongCredentials);
        error_reply(s, from, m, CODE_UNAUTHORIZED, "Unauthorized", true);
    };
    let Ok((device, password)) = s.secret.check(&user.text, unix_now()) else {
        refused(s, m);
        return None;
    };
    let crypto = s.secret.crypto().crypto();
    let Ok(key) = MessageIntegrity::long_term_integrity_key(user.text.clone(), realm.text, password, crypto)
    else {
        refused(s, m);
        return None;
    };
    if MessageIntegrity::check(m, &key, crypto).is_err() {
        refused(s, m);
        return None;
    }
    Some(Authed { device, key })
}

fn handle(s: &Arc<Shared>, from: SocketAddr, mut m: Message) {
    let (method, class) = (m.typ.method, m.typ.class);
    if method == METHOD_BINDING && class == CLASS_REQUEST {
        let mapped = XorMappedAddress { ip: from.ip(), port: from.port() };
        reply(s, from, &[Box::new(m.transaction_id), Box::new(BINDING_SUCCESS), Box::new(mapped)]);
        return;
    }
    if method == METHOD_SEND && class == CLASS_INDICATION {
        send_indication(s, from, &m);
        return;
    }
    if class != CLASS_REQUEST {
        return;
    }
    if ![METHOD_ALLOCATE, METHOD_REFRESH, METHOD_CREATE_PERMISSION, METHOD_CHANNEL_BIND].contains(&method) {
        error_reply(s, from, &m, CODE_BAD_REQUEST, "Unsupported method", false);
        return;
    }
    let Some(auth) = authenticate(s, from, &mut m) else { return };
    let existing = s.state.lock().allocs.get(&from).cloned();
    if method == METHOD_ALLOCATE {
        allocate(s, from, &m, auth, existing.is_some());
        return;
    }
    let Some(alloc) = existing else {
        error_reply(s, from, &m, CODE_ALLOC_MISMATCH, "Allocation Mismatch", false);
        return;
    };
    if alloc.device != auth.device {
        s.refuse(Refusal::WrongCredentials);
        error_reply(s, from, &m, CODE_WRONG_CREDENTIALS, "Wrong Credentials", false);
        return;
    }
    let crypto = s.secret.crypto().crypto();
    let integrity = MessageIntegrity::new_raw_integrity_with_provider(auth.key.clone(), crypto);
    let ok = MessageType::new(method, CLASS_SUCCESS_RESPONSE);
    if method == METHOD_REFRESH {
        let mut lifetime = Lifetime::default();
        let want = if lifetime.get_from(&m).is_ok() { lifetime.0 } else { DEFAULT_LIFETIME };
        if want.is_zero() {
            s.remove(&from);
        } else {
            alloc.live.lock().expires = Instant::now() + want.min(MAX_LIFETIME);
        }
        let lifetime = Lifetime(want.min(MAX_LIFETIME));
        reply(s, from, &[Box::new(m.transaction_id), Box::new(ok), Box::new(lifetime), Box::new(integrity)]);
        return;
    }
    let mut peer = PeerAddress::default();
    if peer.get_from(&m).is_err() {
        s.refuse(Refusal::BadRequest);
        error_reply(s, from, &m, CODE_BAD_REQUEST, "Bad Request", false);
        return;
    }
    let peer_addr = SocketAddr::new(peer.ip, peer.port);
    if let Err(r) = if s.is_own(peer.ip) { Ok(()) } else { s.policy.check(peer.ip) } {
        s.refuse(r);
        tracing::debug!(%peer_addr, reason = r.label(), "relay permission refused");
        error_reply(s, from, &m, CODE_FORBIDDEN, "Forbidden", false);
        return;
    }
    let now = Instant::now();
    if method == METHOD_CHANNEL_BIND {
        let mut ch = ChannelNumber::default();
        if ch.get_from(&m).is_err() || !ch.valid() {
            s.refuse(Refusal::BadRequest);
            error_reply(s, from, &m, CODE_BAD_REQUEST, "Bad Request", false);
            return;
        }
        let mut live = alloc.live.lock();
        // A number names one peer, and a peer has one number.
        let clash = live.channels.get(&ch.0).is_some_and(|(p, _)| *p != peer_addr)
            || live.by_peer.get(&peer_addr).is_some_and(|n| *n != ch.0);
        if clash {
            drop(live);
            error_reply(s, from, &m, CODE_BAD_REQUEST, "Bad Request", false);
            return;
        }
        live.channels.insert(ch.0, (peer_addr, now + CHANNEL_LIFETIME));
        live.by_peer.insert(peer_addr, ch.0);
        live.permissions.insert(peer.ip, now + PERMISSION_LIFETIME);
    } else {
        alloc.live.lock().permissions.insert(peer.ip, now + PERMISSION_LIFETIME);
    }
    reply(s, from, &[Box::new(m.transaction_id), Box::new(ok), Box::new(integrity)]);
}

fn allocate(s: &Arc<Shared>, from: SocketAddr, m: &Message, auth: Authed, exists: bool) {
    if exists {
        error_reply(s, from, m, CODE_ALLOC_MISMATCH, "Allocation Mismatch", false);
        return;
    }
    let mut transport = RequestedTransport::default();
    if transport.get_from(m).is_err() {
        s.refuse(Refusal::BadRequest);
        error_reply(s, from, m, CODE_BAD_REQUEST, "Bad Request", false);
        return;
    }
    if transport.protocol != rtc_turn::proto::PROTO_UDP {
        error_reply(s, from, m, CODE_UNSUPPORTED_TRANS_PROTO, "Unsupported Transport Protocol", false);
        return;
    }
    let Some((user, peer_device)) = s.gate.session_peer(auth.device) else {
        s.refuse(Refusal::NoSession);
        error_reply(s, from, m, CODE_FORBIDDEN, "No running session", false);
        return;
    };
    if s.state.lock().per_user.get(&user).copied().unwrap_or(0) >= s.cfg.max_allocations_per_user {
        s.refuse(Refusal::Quota);
        error_reply(s, from, m, CODE_ALLOC_QUOTA_REACHED, "Allocation Quota Reached", false);
        return;
    }
    let Some(relay) = bind_relay_port(s, local_ip_towards(s.relay_bind_ip, from)) else {
        error_reply(s, from, m, CODE_INSUFFICIENT_CAPACITY, "Insufficient Capacity", false);
        return;
    };
    let bound = match relay.local_addr() {
        Ok(a) => a,
        Err(_) => {
            error_reply(s, from, m, CODE_SERVER_ERROR, "Server Error", false);
            return;
        }
    };
    let relay_addr = SocketAddr::new(s.cfg.public_ip.unwrap_or(bound.ip()), bound.port());
    let mut lifetime = Lifetime::default();
    let want = if lifetime.get_from(m).is_ok() { lifetime.0 } else { DEFAULT_LIFETIME };
    let life = want.clamp(Duration::from_secs(60), MAX_LIFETIME);
    let alloc = {
        let mut st = s.state.lock();
        let bucket = st
            .buckets
            .entry(user)
            .or_insert_with(|| Arc::new(Mutex::new(Bucket::new(s.cfg.user_bandwidth))))
            .clone();
        let alloc = Arc::new(Alloc {
            client: from,
            device: auth.device,
            user,
            peer_device,
            relay: Arc::new(relay),
            relay_addr,
            bound_ip: bound.ip(),
            live: Mutex::new(Live {
                expires: Instant::now() + life,
                permissions: HashMap::new(),
                channels: HashMap::new(),
                by_peer: HashMap::new(),
            }),
            bucket,
            reader: Mutex::new(None),
        });
        st.allocs.insert(from, alloc.clone());
        st.by_port.insert(bound.port(), from);
        *st.per_user.entry(user).or_default() += 1;
        *st.own_ips.entry(relay_addr.ip()).or_default() += 1;
        *st.own_ips.entry(bound.ip()).or_default() += 1;
        s.metrics.relay_allocations.set(st.allocs.len() as i64);
        alloc
    };
    let reader = tokio::spawn(from_peers(Arc::downgrade(s), alloc.clone()));
    *alloc.reader.lock() = Some(reader.abort_handle());
    tracing::debug!(client = %from, relay = %relay_addr, device = auth.device, "relay allocation");
    let crypto = s.secret.crypto().crypto();
    let integrity = MessageIntegrity::new_raw_integrity_with_provider(auth.key, crypto);
    reply(
        s,
        from,
        &[
            Box::new(m.transaction_id),
            Box::new(MessageType::new(METHOD_ALLOCATE, CLASS_SUCCESS_RESPONSE)),
            Box::new(RelayedAddress { ip: relay_addr.ip(), port: relay_addr.port() }),
            Box::new(Lifetime(life)),
            Box::new(XorMappedAddress { ip: from.ip(), port: from.port() }),
            Box::new(integrity),
        ],
    );
}

/// The local address allocations for `client` use: the listener's, or where it listens on
/// every interface, the one the system routes to the client from (the address the client
/// reached the relay by, on a host with one way out).
fn local_ip_towards(bind: IpAddr, client: SocketAddr) -> IpAddr {
    if !bind.is_unspecified() {
        return bind;
    }
    let any: SocketAddr = if client.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().unwrap_or(client);
    std::net::UdpSocket::bind(any)
        .and_then(|s| s.connect(client).and_then(|_| s.local_addr()))
        .map(|a| a.ip())
        .unwrap_or(bind)
}

/// 4 MiB socket buffers: a burst of a fast session is queued, not dropped.
fn big_buffers(sock: &UdpSocket) {
    let s = socket2::SockRef::from(sock);
    for r in [s.set_recv_buffer_size(4 << 20), s.set_send_buffer_size(4 << 20)] {
        if let Err(e) = r {
            tracing::debug!("cannot enlarge a relay socket buffer: {e}");
        }
    }
}

/// A UDP socket on `ip` at the next free port of the range.
fn bind_relay_port(s: &Shared, ip: IpAddr) -> Option<UdpSocket> {
    let (lo, hi) = (*s.cfg.ports.start(), *s.cfg.ports.end());
    let span = u32::from(hi - lo) + 1;
    let mut st = s.state.lock();
    for _ in 0..span.min(4096) {
        let port = st.next_port;
        st.next_port = if port >= hi { lo } else { port + 1 };
        if st.by_port.contains_key(&port) {
            continue;
        }
        let addr = SocketAddr::new(ip, port);
        let Ok(std_sock) = std::net::UdpSocket::bind(addr) else { continue };
        if std_sock.set_nonblocking(true).is_err() {
            continue;
        }
        if let Ok(sock) = UdpSocket::from_std(std_sock) {
            big_buffers(&sock);
            return Some(sock);
        }
    }
    tracing::warn!("no free relay port in {lo}-{hi}");
    None
}

/// Whether `alloc` may send to `peer` now: a live permission, and for the relay's own
/// addresses only the other device's allocation. Returns that allocation for delivery inside.
fn may_send(s: &Shared, alloc: &Alloc, peer: SocketAddr) -> Result<Option<Arc<Alloc>>, Refusal> {
    let now = Instant::now();
    let permitted = alloc.live.lock().permissions.get(&peer.ip()).is_some_and(|t| *t > now);
    if !permitted {
        return Err(Refusal::NotSessionPeer);
    }
    let st = s.state.lock();
    if !(s.policy.relay_ips.contains(&peer.ip()) || st.own_ips.contains_key(&peer.ip())) {
        return Ok(None);
    }
    let target = st.by_port.get(&peer.port()).and_then(|c| st.allocs.get(c)).cloned();
    match target {
        Some(t) if t.device == alloc.peer_device => Ok(Some(t)),
        Some(_) => Err(Refusal::NotSessionPeer),
        None => Err(Refusal::Server),
    }
}

/// Data from the client, to go to `peer`.
fn relay_out(s: &Shared, alloc: &Arc<Alloc>, peer: SocketAddr, data: &[u8]) {
    let inside = match may_send(s, alloc, peer) {
        Ok(t) => t,
        Err(r) => {
            s.dropped(r.label());
            return;
        }
    };
    if !alloc.bucket.lock().take(data.len()) {
        s.counters.over_bandwidth.inc();
        return;
    }
    s.counters.to_peer.inc_by(data.len() as u64);
    match inside {
        // The other device's allocation on this relay: hand it over without the kernel.
        Some(target) => to_client(s, &target, alloc.relay_addr, data),
        None => {
            if let Err(e) = alloc.relay.try_send_to(data, peer) {
                tracing::debug!(%peer, "relay to peer failed: {e}");
            }
        }
    }
}

fn from_client_channel(s: &Shared, from: SocketAddr, packet: &[u8]) {
    let Some(alloc) = s.state.lock().allocs.get(&from).cloned() else { return };
    // ChannelData: channel number (2 bytes), length (2 bytes), data (padded over UDP).
    let [n0, n1, l0, l1, ..] = *packet else { return };
    let (number, len) = (u16::from_be_bytes([n0, n1]), u16::from_be_bytes([l0, l1]));
    let Some(data) = packet.get(4..4 + usize::from(len)) else {
        s.refuse(Refusal::BadRequest);
        return;
    };
    let peer = {
        let live = alloc.live.lock();
        match live.channels.get(&number) {
            Some((peer, until)) if *until > Instant::now() => *peer,
            _ => return,
        }
    };
    relay_out(s, &alloc, peer, data);
}

fn send_indication(s: &Shared, from: SocketAddr, m: &Message) {
    let Some(alloc) = s.state.lock().allocs.get(&from).cloned() else { return };
    let (mut peer, mut data) = (PeerAddress::default(), Data::default());
    if peer.get_from(m).is_err() || data.get_from(m).is_err() {
        s.refuse(Refusal::BadRequest);
        return;
    }
    relay_out(s, &alloc, SocketAddr::new(peer.ip, peer.port), &data.0);
}

/// Data that arrived for `alloc` from `peer`: to its client, on its channel or as a Data
/// indication; only from peers it has a permission for.
fn to_client(s: &Shared, alloc: &Alloc, peer: SocketAddr, data: &[u8]) {
    let channel = {
        let live = alloc.live.lock();
        let now = Instant::now();
        if live.permissions.get(&peer.ip()).is_none_or(|t| *t <= now) {
            s.dropped("no_permission");
            return;
        }
        live.by_peer.get(&peer).copied().filter(|n| live.channels.get(n).is_some_and(|(_, t)| *t > now))
    };
    s.counters.to_client.inc_by(data.len() as u64);
    match channel {
        Some(number) => {
            thread_local!(static OUT: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) });
            OUT.with_borrow_mut(|out| {
                out.clear();
                out.extend_from_slice(&number.to_be_bytes());
                out.extend_from_slice(&(data.len() as u16).to_be_bytes());
                out.extend_from_slice(data);
                s.send_to_client(out, alloc.client);
            });
        }
        None => {
            let typ = MessageType::new(METHOD_DATA, CLASS_INDICATION);
            let mut out = Message::new();
            let built = out.build(&[
                Box::new(TransactionId::new()),
                Box::new(typ),
                Box::new(PeerAddress { ip: peer.ip(), port: peer.port() }),
                Box::new(Data(data.to_vec())),
            ]);
            if built.is_ok() {
                s.send_to_client(&out.raw, alloc.client);
            }
        }
    }
}

/// Reads what peers send to one allocation's relay port until the allocation ends.
async fn from_peers(shared: std::sync::Weak<Shared>, alloc: Arc<Alloc>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, peer) = match alloc.relay.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("relay port: {e}");
                continue;
            }
        };
        let Some(s) = shared.upgrade() else { return };
        if !alloc.bucket.lock().take(n) {
            s.counters.over_bandwidth.inc();
            continue;
        }
        to_client(&s, &alloc, peer, &buf[..n]);
    }
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").field("listen", &self.shared.local).finish()
    }
}

#[cfg(test)]
mod tests;
