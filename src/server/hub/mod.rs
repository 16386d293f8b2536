//! Who is online, and the sessions between them.
//!
//! All state lives behind one mutex and is only touched for in-memory work (no awaits while
//! locked). Messages to a device go through its bounded outbound queue; a device that does not
//! drain it is dropped rather than allowed to grow the server's memory.

use crate::number::{self, E164};
use crate::protocol::limits::clip;
use crate::protocol::{
    CallFailure, CallStage, ClosedReason, EndReason, ErrorCode, IceServer, Offer, Outcome, Party, PeerInfo,
    Role, ServerMsg, SessionId, Settings, SignalData, close_code,
};
use crate::server::metrics::Metrics;
use crate::server::pbx::CallUpdate;
use crate::server::store::Store;
use axum::extract::ws::Utf8Bytes;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

/// How many recently closed sessions are remembered to answer late messages clearly.
mod placed;
mod relay;
mod remote;
mod request;
mod resume;
mod users;

pub use relay::HubGate;

use crate::server::cluster::wire::DeviceOp as remote_op;

use resume::{Away, Claim};

const CLOSED_MEMORY: usize = 10_000;

/// Close reason of a connection replaced by a newer one of the same device.
pub const REPLACED: &str = "replaced by a newer connection of this device";

#[derive(Clone, Debug)]
pub struct HubConfig {
    pub answer_timeout: Duration,
    pub heartbeat: Duration,
    pub default_region: String,
    pub ice_servers: Vec<IceServer>,
    /// Messages queued for one device before it counts as stuck and is dropped.
    pub outbound_queue: usize,
    /// Relay every session, whatever the users chose (`--relay always`).
    pub relay_always: bool,
    /// How long a device's active sessions wait for it after its connection dropped (and
    /// how long a session claimed with `resume` after a server restart waits for the other
    /// side's claim).
    pub reconnect_grace: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            answer_timeout: Duration::from_secs(30),
            heartbeat: Duration::from_secs(20),
            default_region: "DE".into(),
            ice_servers: Vec::new(),
            outbound_queue: 256,
            relay_always: false,
            reconnect_grace: Duration::from_secs(30),
        }
    }
}

/// What the connection task is told to write.
#[derive(Debug)]
pub enum Outbound {
    Text(Utf8Bytes),
    Close(u16, std::borrow::Cow<'static, str>),
}

/// Where a device's messages go: its connection here, or the node holding it (cluster).
enum Link {
    Local(mpsc::Sender<Outbound>),
    Remote(Arc<str>),
}

struct DeviceConn {
    conn_id: u64,
    user_id: i64,
    link: Link,
    reported_ip: Option<IpAddr>,
    observed_ip: IpAddr,
    /// Sessions this device takes part in (as caller, ringing callee or active callee).
    sessions: Vec<SessionId>,
}

struct OnlineUser {
    number: String,
    display_name: String,
    verified: bool,
    /// Region national numbers dialed by this user are read in.
    region: String,
    settings: Settings,
    /// Callers (E.164) who get `unavailable` from this user.
    blocked: HashSet<String>,
    devices: Vec<i64>,
    /// Requests that rang this user lately (see [`RINGS_PER_CALLEE`]).
    rings: crate::server::ratelimit::Bucket,
    /// The user's phone on the PBX.
    extension: Option<String>,
}

/// Most callers ringing one callee at once; more get `unavailable`.
pub const RINGING_CALLERS: usize = 3;
/// Requests that may ring one callee in a burst, and then one every ten seconds.
pub const RINGS_PER_CALLEE: f64 = 6.0;

enum SessionState {
    /// Click-to-call: the PBX is placing the phone call; nobody is rung yet.
    Placing {
        target: String,
    },
    Ringing {
        devices: Vec<i64>,
        timer: Option<AbortHandle>,
        since: Instant,
    },
    Active {
        callee_device: i64,
    },
}

struct Session {
    req_id: u64,
    offer: Offer,
    caller_user: i64,
    caller_device: i64,
    callee_user: i64,
    state: SessionState,
    /// Relayed only: no address is told, and only relay candidates are forwarded.
    relayed: bool,
    /// The PBX call it was placed with (click-to-call).
    call: Option<String>,
}

/// A request on its way to the callee's devices.
struct Routed {
    caller_device: i64,
    caller_user: i64,
    req_id: u64,
    offer: Offer,
    call_ref: Option<String>,
    call: Option<String>,
}

#[derive(Default)]
struct Inner {
    devices: HashMap<i64, DeviceConn>,
    users: HashMap<i64, OnlineUser>,
    by_number: HashMap<String, i64>,
    sessions: HashMap<SessionId, Session>,
    closed: HashMap<SessionId, &'static str>,
    closed_order: VecDeque<SessionId>,
    shutting_down: bool,
    /// Devices whose connection dropped while they were in active sessions: the sessions
    /// wait for them until the timer ends them.
    away: HashMap<i64, Away>,
    /// Sessions a device asked to resume that this server does not know (it restarted):
    /// waiting for the other side to claim the same id.
    claims: HashMap<SessionId, Claim>,
    /// This node's part in a cluster, if it is one.
    cluster: Option<Arc<crate::server::cluster::Cluster>>,
    /// Cluster: users of devices on other nodes that take part in sessions held here.
    remote_users: HashMap<i64, remote::RemoteUser>,
    /// Cluster: sessions held by other nodes that devices connected here take part in.
    remote_sessions: HashMap<(SessionId, i64), remote::RemotePart>,
    /// Devices connected to this node.
    local_devices: usize,
    /// Cluster: messages for other nodes, sent when the lock is released (those for one
    /// node as one NATS message).
    outbox: Vec<(Arc<str>, crate::server::cluster::wire::NodeMsg)>,
    /// Cluster: requests handed to another node that has not rung anyone for them yet.
    pending_rings: HashMap<SessionId, remote::PendingRing>,
}

/// The hub's lock; releasing it sends what the work done under it has for other nodes.
struct Locked<'a>(parking_lot::MutexGuard<'a, Inner>);

impl std::ops::Deref for Locked<'_> {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Inner {
        &mut self.0
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if !self.0.outbox.is_empty() {
            let out = std::mem::take(&mut self.0.outbox);
            if let Some(c) = &self.0.cluster {
                c.send_all(out);
            }
        }
    }
}

/// An access request as the caller sent it.
pub struct AccessRequest {
    pub req_id: u64,
    pub target: String,
    pub offer: Offer,
    pub region: Option<String>,
    pub call_ref: Option<String>,
    /// Click-to-call: place the phone call through the PBX first.
    pub place_call: bool,
    /// The caller's extension on the PBX (click-to-call).
    pub extension: Option<String>,
}

/// The identity a connection proved with its token.
pub struct Login {
    pub device_id: i64,
    pub user_id: i64,
    pub number: String,
    pub display_name: String,
    /// The number was proven to be this user's.
    pub verified: bool,
    pub settings: Settings,
    /// The user's phone on the PBX (click-to-call).
    pub extension: Option<String>,
    pub blocked: Vec<String>,
    pub reported_ip: Option<IpAddr>,
    pub observed_ip: IpAddr,
}

pub struct Hub {
    inner: Mutex<Inner>,
    /// The PBX click-to-call places calls through, if any.
    pub pbx: parking_lot::RwLock<Option<Arc<dyn crate::server::pbx::Pbx>>>,
    /// The relay devices get credentials for, if any.
    pub relay: parking_lot::RwLock<Option<Arc<crate::server::relay::RelayIce>>>,
    pub store: Arc<dyn Store>,
    pub cfg: HubConfig,
    pub metrics: Arc<Metrics>,
    next_conn: AtomicU64,
}

fn encode(msg: &ServerMsg) -> Utf8Bytes {
    match serde_json::to_string(msg) {
        Ok(s) => Utf8Bytes::from(s),
        // Our own types always serialize; keep the connection alive regardless.
        Err(e) => Utf8Bytes::from(format!(
            r#"{{"type":"error","code":"internal","message":"cannot encode reply: {e}"}}"#
        )),
    }
}

pub fn error_msg(code: ErrorCode, message: impl Into<String>) -> ServerMsg {
    ServerMsg::Error { code, message: clip(message.into()), req_id: None, session_id: None }
}

fn session_error(code: ErrorCode, message: impl Into<String>, id: &SessionId) -> ServerMsg {
    ServerMsg::Error { code, message: clip(message.into()), req_id: None, session_id: Some(id.clone()) }
}

impl Inner {
    /// Queues a message for a device. A full queue means the device stopped reading: it is
    /// dropped (its connection task then closes the socket).
    fn send(&mut self, device_id: i64, msg: &ServerMsg) -> bool {
        self.send_text(device_id, encode(msg))
    }

    /// Queues an encoded message for a device, here or on the node holding it.
    fn send_text(&mut self, device_id: i64, text: Utf8Bytes) -> bool {
        let Some(dev) = self.devices.get(&device_id) else {
            return false;
        };
        let tx = match &dev.link {
            Link::Local(tx) => tx,
            Link::Remote(node) => {
                let msg = crate::server::cluster::wire::NodeMsg::Deliver {
                    device: device_id,
                    text: text.as_str().to_owned(),
                };
                let node = node.clone();
                self.outbox.push((node, msg));
                return true;
            }
        };
        match tx.try_send(Outbound::Text(text)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(device_id, "outbound queue full: dropping a device that does not read");
                // The connection task sees its queue closed and ends; cleanup runs there.
                if let Some(dev) = self.devices.get_mut(&device_id) {
                    let (dead_tx, _) = mpsc::channel(1);
                    dev.link = Link::Local(dead_tx);
                }
                false
            }
        }
    }

    fn remember_closed(&mut self, id: SessionId, why: &'static str) {
        if self.closed_order.len() >= CLOSED_MEMORY
            && let Some(old) = self.closed_order.pop_front()
        {
            self.closed.remove(&old);
        }
        self.closed.insert(id.clone(), why);
        self.closed_order.push_back(id);
    }

    fn detach(&mut self, device_id: i64, id: &SessionId) {
        let Some(dev) = self.devices.get_mut(&device_id) else {
            return;
        };
        dev.sessions.retain(|s| s != id);
        if let Link::Remote(node) = &dev.link {
            let node = node.clone();
            self.outbox.push((
                node,
                crate::server::cluster::wire::NodeMsg::Detach { device: device_id, session: id.clone() },
            ));
        }
    }

    /// Removes a session and unlinks it from every device that knew it.
    fn remove_session(&mut self, id: &SessionId, why: &'static str) -> Option<Session> {
        let session = self.sessions.remove(id)?;
        self.detach(session.caller_device, id);
        match &session.state {
            SessionState::Ringing { devices, timer, .. } => {
                if let Some(t) = timer {
                    t.abort();
                }
                for d in devices.clone() {
                    self.detach(d, id);
                }
            }
            SessionState::Active { callee_device } => self.detach(*callee_device, id),
            SessionState::Placing { .. } => {}
        }
        self.remember_closed(id.clone(), why);
        Some(session)
    }

    /// Tells devices that were ringing for a session that it stopped, and why.
    fn close_initiation(&mut self, devices: &[i64], id: &SessionId, reason: ClosedReason) {
        let msg = ServerMsg::InitiationClosed { session_id: id.clone(), reason };
        for d in devices {
            self.send(*d, &msg);
        }
    }

    /// What a device is told of the other side; no address when the session is relayed.
    fn peer_info(&self, user_id: i64, device_id: i64, relayed: bool) -> Option<PeerInfo> {
        let user = self.party(user_id)?;
        let dev = self.devices.get(&device_id)?;
        Some(PeerInfo {
            number: user.number,
            display_name: user.display_name,
            device_ip: dev.reported_ip.filter(|_| !relayed),
            observed_ip: Some(dev.observed_ip).filter(|_| !relayed),
        })
    }

    /// Whether one more request from `caller` may ring `callee`: at most
    /// [`RINGING_CALLERS`] distinct callers ring at once, and no more than the callee's ring
    /// budget allows. What others send must not bury the callee in prompts.
    fn may_ring(&mut self, callee: i64, caller: i64, now: Instant) -> bool {
        let mut callers: Vec<i64> = Vec::new();
        let devices = self.users.get(&callee).map(|u| u.devices.as_slice()).unwrap_or_default();
        for id in devices.iter().filter_map(|d| self.devices.get(d)).flat_map(|d| &d.sessions) {
            if let Some(s) = self.sessions.get(id)
                && s.callee_user == callee
                && matches!(s.state, SessionState::Ringing { .. })
                && !callers.contains(&s.caller_user)
            {
                callers.push(s.caller_user);
            }
        }
        if callers.len() >= RINGING_CALLERS && !callers.contains(&caller) {
            return false;
        }
        self.users.get_mut(&callee).is_some_and(|u| u.rings.take(now))
    }

    fn hides(&self, user_id: i64) -> bool {
        match self.users.get(&user_id) {
            Some(u) => u.settings.hide_address,
            None => self.remote_users.get(&user_id).is_some_and(|u| u.hides_address),
        }
    }

    /// Who a user (here or, in a cluster, of a remote device) is.
    fn party(&self, user_id: i64) -> Option<Party> {
        match self.users.get(&user_id) {
            Some(u) => Some(Party {
                number: u.number.clone(),
                display_name: u.display_name.clone(),
                verified: u.verified,
            }),
            None => self.remote_users.get(&user_id).map(|u| u.party.clone()),
        }
    }
}

impl Hub {
    fn lock(&self) -> Locked<'_> {
        Locked(self.inner.lock())
    }

    pub fn new(store: Arc<dyn Store>, cfg: HubConfig, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Hub {
            inner: Mutex::new(Inner::default()),
            relay: parking_lot::RwLock::new(None),
            pbx: parking_lot::RwLock::new(None),
            store,
            cfg,
            metrics,
            next_conn: AtomicU64::new(1),
        })
    }

    /// Puts a logged-in device online. Returns the connection id and its outbound queue.
    /// An older connection of the same device is told it was replaced and dropped.
    pub fn connect(self: &Arc<Self>, login: &Login) -> Option<(u64, mpsc::Receiver<Outbound>)> {
        let conn_id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.cfg.outbound_queue);
        let mut inner = self.lock();
        if inner.shutting_down {
            return None;
        }
        if let Some(old) = inner.devices.get(&login.device_id) {
            if let Link::Local(tx) = &old.link {
                let _ = tx.try_send(Outbound::Close(close_code::REPLACED, REPLACED.into()));
            }
            let old_conn = old.conn_id;
            self.disconnect_locked(&mut inner, login.device_id, old_conn);
        }
        // Back within the grace time: its sessions are its own again.
        let resumed = match inner.away.remove(&login.device_id) {
            Some(away) => {
                away.timer.abort();
                away.sessions.into_iter().filter(|id| inner.sessions.contains_key(id)).collect()
            }
            None => Vec::new(),
        };
        inner.devices.insert(
            login.device_id,
            DeviceConn {
                conn_id,
                user_id: login.user_id,
                link: Link::Local(tx),
                reported_ip: login.reported_ip,
                observed_ip: login.observed_ip,
                sessions: resumed,
            },
        );
        let default_region = self.cfg.default_region.clone();
        let user = inner.users.entry(login.user_id).or_insert_with(|| OnlineUser {
            number: login.number.clone(),
            display_name: login.display_name.clone(),
            verified: login.verified,
            region: region_of(&login.number).unwrap_or(default_region),
            settings: login.settings,
            blocked: HashSet::new(),
            devices: Vec::new(),
            rings: crate::server::ratelimit::Bucket::new(RINGS_PER_CALLEE, 0.1),
            extension: None,
        });
        user.extension = login.extension.clone();
        user.display_name = login.display_name.clone();
        user.verified = login.verified;
        user.settings = login.settings;
        user.blocked = login.blocked.iter().cloned().collect();
        user.devices.push(login.device_id);
        inner.by_number.insert(login.number.clone(), login.user_id);
        inner.local_devices += 1;
        self.metrics.online_devices.set(inner.local_devices as i64);
        self.metrics.online_users.set(inner.users.len() as i64);
        Some((conn_id, rx))
    }

    /// Takes a device offline (if `conn_id` is still its current connection) and ends or
    /// withdraws everything it took part in.
    pub fn disconnect(self: &Arc<Self>, device_id: i64, conn_id: u64) {
        let mut inner = self.lock();
        self.disconnect_locked(&mut inner, device_id, conn_id);
    }

    fn disconnect_locked(self: &Arc<Self>, inner: &mut Inner, device_id: i64, conn_id: u64) {
        match inner.devices.get(&device_id) {
            Some(dev) if dev.conn_id == conn_id => {}
            _ => return,
        }
        let sessions = inner.devices.get(&device_id).map(|d| d.sessions.clone()).unwrap_or_default();
        self.leave_remote_sessions(inner, device_id, &sessions);
        let mut kept = Vec::new();
        for id in sessions {
            let active =
                inner.sessions.get(&id).is_some_and(|s| matches!(s.state, SessionState::Active { .. }));
            if active && inner.shutting_down {
                // The server goes away; the devices resume with the next one.
                continue;
            }
            if active {
                // The peers' own connection may well be fine: wait for the device to come back.
                kept.push(id);
            } else {
                self.device_gone_from_session(inner, device_id, &id, EndReason::PeerDisconnected);
            }
        }
        if !kept.is_empty() {
            let hub = Arc::clone(self);
            let grace = self.cfg.reconnect_grace;
            let timer = tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                hub.grace_over(device_id);
            })
            .abort_handle();
            tracing::debug!(
                device_id,
                sessions = kept.len(),
                "connection lost: sessions wait for the device"
            );
            inner.away.insert(device_id, Away { sessions: kept, timer });
        }
        let Some(dev) = inner.devices.remove(&device_id) else {
            return;
        };
        if matches!(dev.link, Link::Remote(_)) {
            return; // its user is forgotten with the last of its remote devices
        }
        inner.local_devices = inner.local_devices.saturating_sub(1);
        if let Some(user) = inner.users.get_mut(&dev.user_id) {
            user.devices.retain(|d| *d != device_id);
            if user.devices.is_empty() {
                let number = user.number.clone();
                inner.users.remove(&dev.user_id);
                inner.by_number.remove(&number);
            }
        }
        self.metrics.online_devices.set(inner.local_devices as i64);
        self.metrics.online_users.set(inner.users.len() as i64);
    }

    fn device_gone_from_session(&self, inner: &mut Inner, device_id: i64, id: &SessionId, reason: EndReason) {
        let Some(session) = inner.sessions.get_mut(id) else {
            return;
        };
        let is_caller = session.caller_device == device_id;
        match &mut session.state {
            SessionState::Ringing { devices, .. } if !is_caller => {
                // One callee device went away; the request rings on at the others.
                devices.retain(|d| *d != device_id);
                if devices.is_empty() {
                    let (caller, req_id) = (session.caller_device, session.req_id);
                    inner.remove_session(id, "every device of the callee went offline");
                    self.tell_outcome(inner, caller, req_id, Some(id), Outcome::Unavailable);
                }
            }
            SessionState::Ringing { devices, .. } => {
                let devices = devices.clone();
                inner.remove_session(id, "the caller went offline");
                inner.close_initiation(&devices, id, ClosedReason::CallerGone);
            }
            SessionState::Placing { .. } => {
                // The phone call goes on by itself; there is nobody to ring the session for.
                inner.remove_session(id, "the caller went offline");
            }
            SessionState::Active { callee_device } => {
                let other = if is_caller { *callee_device } else { session.caller_device };
                inner.remove_session(id, "a device of the session went offline");
                inner.send(other, &ServerMsg::SessionEnded { session_id: id.clone(), reason });
            }
        }
    }

    fn tell_outcome(
        &self,
        inner: &mut Inner,
        caller_device: i64,
        req_id: u64,
        id: Option<&SessionId>,
        outcome: Outcome,
    ) {
        self.metrics.outcomes.get_or_create(&vec![("outcome", outcome.label())]).inc();
        inner.send(caller_device, &ServerMsg::AccessOutcome { req_id, session_id: id.cloned(), outcome });
    }

    /// Sends a message to one device (used by the connection task for replies).
    pub fn send_to(&self, device_id: i64, msg: &ServerMsg) {
        self.lock().send(device_id, msg);
    }

    /// Explains why a message names a session this device cannot act on.
    fn unknown_session(&self, inner: &mut Inner, device_id: i64, id: &SessionId) {
        let msg = match inner.closed.get(id) {
            Some(why) => session_error(ErrorCode::SessionClosed, format!("session {id} is over: {why}"), id),
            None => session_error(
                ErrorCode::UnknownSession,
                format!("there is no session {id} for this device"),
                id,
            ),
        };
        inner.send(device_id, &msg);
    }

    pub fn answer(&self, device_id: i64, id: &SessionId, accept: bool) {
        if self.forwarded(device_id, id, || remote_op::Answer { accept }) {
            return;
        }
        let mut inner = self.lock();
        let Some(user_id) = inner.devices.get(&device_id).map(|d| d.user_id) else {
            return;
        };
        let Some(session) = inner.sessions.get_mut(id) else {
            return self.unknown_session(&mut inner, device_id, id);
        };
        if session.callee_user != user_id {
            return self.unknown_session(&mut inner, device_id, id);
        }
        let SessionState::Ringing { devices, since, .. } = &mut session.state else {
            let msg =
                session_error(ErrorCode::AlreadyAnswered, format!("session {id} was already answered"), id);
            inner.send(device_id, &msg);
            return;
        };
        if !devices.contains(&device_id) {
            // A device of the callee that came online after the request was sent.
            return self.unknown_session(&mut inner, device_id, id);
        }
        self.metrics.answer_seconds.observe(since.elapsed().as_secs_f64());
        let others: Vec<i64> = devices.iter().copied().filter(|d| *d != device_id).collect();
        let (caller_device, caller_user, req_id, offer) =
            (session.caller_device, session.caller_user, session.req_id, session.offer);
        if !accept {
            inner.remove_session(id, "it was declined");
            inner.close_initiation(&others, id, ClosedReason::DeclinedElsewhere);
            self.tell_outcome(&mut inner, caller_device, req_id, Some(id), Outcome::Declined);
            return;
        }
        if let SessionState::Ringing { timer: Some(t), .. } = &session.state {
            t.abort();
        }
        session.state = SessionState::Active { callee_device: device_id };
        let relayed = self.cfg.relay_always || inner.hides(caller_user) || inner.hides(user_id);
        if let Some(s) = inner.sessions.get_mut(id) {
            s.relayed = relayed;
        }
        for d in &others {
            inner.detach(*d, id);
        }
        inner.close_initiation(&others, id, ClosedReason::AnsweredElsewhere);
        let (Some(caller_info), Some(callee_info)) = (
            inner.peer_info(caller_user, caller_device, relayed),
            inner.peer_info(user_id, device_id, relayed),
        ) else {
            return;
        };
        inner.announce(caller_device, id);
        inner.announce(device_id, id);
        self.tell_outcome(&mut inner, caller_device, req_id, Some(id), Outcome::Accepted);
        inner.send(
            caller_device,
            &ServerMsg::SessionStarted {
                session_id: id.clone(),
                role: Role::Caller,
                offer,
                peer: callee_info,
                relayed,
            },
        );
        inner.send(
            device_id,
            &ServerMsg::SessionStarted {
                session_id: id.clone(),
                role: Role::Callee,
                offer,
                peer: caller_info,
                relayed,
            },
        );
    }

    /// The other device of an active session `device_id` is part of.
    fn active_peer(inner: &Inner, device_id: i64, id: &SessionId) -> Result<i64, Option<ErrorCode>> {
        let Some(session) = inner.sessions.get(id) else {
            return Err(None);
        };
        match session.state {
            SessionState::Active { callee_device } if callee_device == device_id => Ok(session.caller_device),
            SessionState::Active { callee_device } if session.caller_device == device_id => Ok(callee_device),
            SessionState::Ringing { .. } if session.caller_device == device_id => {
                Err(Some(ErrorCode::SessionNotActive))
            }
            SessionState::Ringing { ref devices, .. } if devices.contains(&device_id) => {
                Err(Some(ErrorCode::SessionNotActive))
            }
            _ => Err(None),
        }
    }

    pub fn signal(&self, device_id: i64, id: &SessionId, data: SignalData) {
        if self.forwarded(device_id, id, || remote_op::Signal { data: data.clone() }) {
            return;
        }
        let mut inner = self.lock();
        match Self::active_peer(&inner, device_id, id) {
            Ok(peer) => {
                let relayed = inner.sessions.get(id).is_some_and(|s| s.relayed);
                if relayed && let Err(why) = self.relay_only(&data) {
                    tracing::info!(device_id, session = %id, "refused a signal of a relayed session: {why}");
                    self.metrics.relay_refusals.get_or_create(&vec![("reason", "signal_not_relay")]).inc();
                    let msg = session_error(
                        ErrorCode::RelayRequired,
                        format!(
                            "session {id} is relayed: {why}; only candidates on the server's relay are passed on"
                        ),
                        id,
                    );
                    inner.send(device_id, &msg);
                    return;
                }
                inner.send(peer, &ServerMsg::Signal { session_id: id.clone(), data });
            }
            Err(Some(code)) => {
                let msg = session_error(
                    code,
                    format!("session {id} is not accepted yet: signaling starts after accept"),
                    id,
                );
                inner.send(device_id, &msg);
            }
            Err(None) => self.unknown_session(&mut inner, device_id, id),
        }
    }

    pub fn end(&self, device_id: i64, id: &SessionId) {
        if self.forwarded(device_id, id, || remote_op::End) {
            return;
        }
        let mut inner = self.lock();
        let Some(session) = inner.sessions.get(id) else {
            return self.unknown_session(&mut inner, device_id, id);
        };
        match &session.state {
            SessionState::Placing { .. } if session.caller_device == device_id => {
                // Cancelled before the answer: the PBX hangs the phone call up.
                let (req_id, call) = (session.req_id, session.call.clone());
                inner.remove_session(id, "the caller cancelled it");
                self.tell_outcome(&mut inner, device_id, req_id, Some(id), Outcome::Cancelled);
                drop(inner);
                if let (Some(call), Some(pbx)) = (call, self.pbx.read().clone()) {
                    pbx.hangup(&call);
                }
            }
            SessionState::Ringing { devices, .. } if session.caller_device == device_id => {
                let (devices, req_id) = (devices.clone(), session.req_id);
                inner.remove_session(id, "the caller cancelled it");
                inner.close_initiation(&devices, id, ClosedReason::Cancelled);
                self.tell_outcome(&mut inner, device_id, req_id, Some(id), Outcome::Cancelled);
            }
            SessionState::Ringing { devices, .. } if devices.contains(&device_id) => {
                // Ending a ringing initiation from the callee side is a decline.
                drop(inner);
                self.answer(device_id, id, false);
            }
            SessionState::Active { .. } => match Self::active_peer(&inner, device_id, id) {
                Ok(peer) => {
                    inner.remove_session(id, "it was ended");
                    inner.send(
                        peer,
                        &ServerMsg::SessionEnded { session_id: id.clone(), reason: EndReason::PeerEnded },
                    );
                    inner.send(
                        device_id,
                        &ServerMsg::SessionEnded { session_id: id.clone(), reason: EndReason::YouEnded },
                    );
                }
                Err(_) => self.unknown_session(&mut inner, device_id, id),
            },
            _ => self.unknown_session(&mut inner, device_id, id),
        }
    }

    /// Closes the connection of a device (after logout).
    pub fn kick(&self, device_id: i64, reason: &'static str) {
        self.kick_local(device_id, close_code::AUTH_FAILED, reason);
        let cluster = self.lock().cluster.clone();
        if let Some(c) = cluster {
            // Its connection may be on another node.
            let msg = crate::server::cluster::wire::AllMsg::Kick {
                device: device_id,
                code: close_code::AUTH_FAILED,
                reason: reason.into(),
            };
            c.broadcast(&msg);
        }
    }

    /// Closes the connection of a device if it is connected here.
    pub fn kick_local(&self, device_id: i64, code: u16, reason: &str) {
        let inner = self.lock();
        if let Some(DeviceConn { link: Link::Local(tx), .. }) = inner.devices.get(&device_id) {
            let _ = tx.try_send(Outbound::Close(code, reason.to_owned().into()));
        }
    }

    /// Tells every connection the server is going away and refuses new ones. Active
    /// sessions are not ended: the peers' own connection carries on, and their devices
    /// resume the sessions with the server that comes back.
    pub fn shutdown(&self) {
        let mut inner = self.lock();
        inner.shutting_down = true;
        for dev in inner.devices.values() {
            if let Link::Local(tx) = &dev.link {
                let _ = tx.try_send(Outbound::Close(close_code::RESTART, "server is restarting".into()));
            }
        }
    }

    /// Whether a device is connected to this node.
    pub fn is_online(&self, device_id: i64) -> bool {
        matches!(self.lock().devices.get(&device_id), Some(DeviceConn { link: Link::Local(_), .. }))
    }

    /// Devices connected to this node.
    pub fn online_devices(&self) -> usize {
        self.lock().local_devices
    }
}

/// The region of an E.164 number, for reading the national numbers its owner dials.
fn region_of(number: &str) -> Option<String> {
    number::normalize(number, None).ok().and_then(|n| n.region())
}
