//! The hub in a cluster: devices on other nodes, sessions held by other nodes, and what
//! happens when a node is lost. See [`crate::server::cluster`] for the design.

use super::*;
use crate::server::cluster::wire::{
    AllMsg, DeviceOp, NodeMsg, PresenceRow, RemoteDevice, RingRequest, UserChange,
};
use crate::server::cluster::{Cluster, authority_of};

/// The user of a device on another node, as far as sessions held here need it.
pub(crate) struct RemoteUser {
    pub(super) party: Party,
    pub(super) hides_address: bool,
}

/// A request handed to another node, until that node rings someone for it (or answers).
pub(crate) struct PendingRing {
    pub(super) authority: String,
    pub(super) caller_device: i64,
    pub(super) req_id: u64,
    pub(super) since: Instant,
}

/// A device here takes part in a session another node holds.
pub(crate) struct RemotePart {
    pub(super) authority: String,
    pub(super) role: Role,
    pub(super) active: bool,
    pub(super) req_id: Option<u64>,
    pub(super) peer: Option<(i64, i64)>,
}

impl Inner {
    /// Adds the session to the device's list and, for a device on another node, tells that
    /// node (its role, and whether the session is active yet).
    pub(super) fn announce(&mut self, device_id: i64, id: &SessionId) {
        let Some(session) = self.sessions.get(id) else {
            return;
        };
        let role = if session.caller_device == device_id { Role::Caller } else { Role::Callee };
        let (active, peer) = match session.state {
            SessionState::Active { callee_device } if role == Role::Caller => {
                (true, Some((callee_device, session.callee_user)))
            }
            SessionState::Active { .. } => (true, Some((session.caller_device, session.caller_user))),
            _ => (false, None),
        };
        let req_id = (role == Role::Caller).then_some(session.req_id);
        let Some(dev) = self.devices.get_mut(&device_id) else {
            return;
        };
        if !dev.sessions.contains(id) {
            dev.sessions.push(id.clone());
        }
        if let Link::Remote(node) = &dev.link {
            let msg = NodeMsg::Attach { device: device_id, session: id.clone(), role, active, req_id, peer };
            let node = node.clone();
            self.outbox.push((node, msg));
        }
    }

    /// Knows (or updates) a device on another node and its user.
    fn upsert_remote(&mut self, d: &RemoteDevice) {
        if !self.users.contains_key(&d.user) {
            let party = Party {
                number: d.number.clone(),
                display_name: d.display_name.clone(),
                verified: d.verified,
            };
            self.remote_users.insert(d.user, RemoteUser { party, hides_address: d.hides_address });
        }
        self.upsert_remote_device(d.device, d.user, &d.node, d.reported_ip, d.observed_ip);
    }

    fn upsert_remote_device(
        &mut self,
        device: i64,
        user: i64,
        node: &str,
        reported_ip: Option<IpAddr>,
        observed_ip: IpAddr,
    ) {
        match self.devices.get_mut(&device) {
            // Connected here: that connection is the truth.
            Some(DeviceConn { link: Link::Local(_), .. }) => {}
            Some(dev) => {
                if !matches!(&dev.link, Link::Remote(n) if &**n == node) {
                    dev.link = Link::Remote(Arc::from(node));
                }
                dev.reported_ip = reported_ip;
                dev.observed_ip = observed_ip;
            }
            None => {
                let dev = DeviceConn {
                    conn_id: 0,
                    user_id: user,
                    link: Link::Remote(Arc::from(node)),
                    reported_ip,
                    observed_ip,
                    sessions: Vec::new(),
                };
                self.devices.insert(device, dev);
            }
        }
    }

    /// What this node tells others of one of its own devices.
    fn describe(&self, device_id: i64) -> Option<RemoteDevice> {
        let c = self.cluster.as_ref()?;
        let dev = self.devices.get(&device_id)?;
        let user = self.users.get(&dev.user_id)?;
        Some(RemoteDevice {
            device: device_id,
            user: dev.user_id,
            node: c.node.to_string(),
            number: user.number.clone(),
            display_name: user.display_name.clone(),
            verified: user.verified,
            hides_address: user.settings.hide_address,
            reported_ip: dev.reported_ip,
            observed_ip: dev.observed_ip,
        })
    }
}

impl Hub {
    /// Makes this hub one node of a cluster (once, at start).
    pub fn join_cluster(&self, cluster: Arc<Cluster>) {
        self.lock().cluster = Some(cluster);
    }

    pub fn cluster(&self) -> Option<Arc<Cluster>> {
        self.lock().cluster.clone()
    }

    /// Finds the callee's devices in the presence table and rings them from their
    /// authority: here, or the node holding the callee's device with the lowest node id.
    pub(super) async fn route(
        self: Arc<Self>,
        cluster: Arc<Cluster>,
        target: E164,
        req: Routed,
        place: Option<Option<String>>,
        received: Instant,
    ) {
        let (caller_device, req_id) = (req.caller_device, req.req_id);
        let rows = match cluster.lookup(target.as_str()).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!("presence lookup failed: {e}");
                let msg = ServerMsg::Error {
                    code: ErrorCode::Unavailable,
                    message: "the server cannot reach its database right now; try again shortly".into(),
                    req_id: Some(req_id),
                    session_id: None,
                };
                self.lock().send(caller_device, &msg);
                return;
            }
        };
        let authority = match rows.iter().map(|r| r.node.as_str()).min() {
            Some(node) => node.to_owned(),
            // Click-to-call places the phone call even when nobody would be rung.
            None if place.is_some() => cluster.node.to_string(),
            None => {
                let mut inner = self.lock();
                return self.tell_outcome(&mut inner, caller_device, req_id, None, Outcome::Unavailable);
            }
        };
        let id = SessionId(format!("{authority}.{}", crate::server::auth::new_session_id()));
        tracing::debug!(session = %id, devices = rows.len(), "routing a request to its authority");
        if authority == *cluster.node {
            return self.ring_here(id, target, req, place, &rows, received);
        }
        let mut inner = self.lock();
        let Some(caller) = inner.describe(caller_device) else {
            return; // the caller went offline meanwhile
        };
        if !cluster.alive(&authority) {
            let msg = ServerMsg::Error {
                code: ErrorCode::NodeLost,
                message: "the server node of the person you are calling stopped: dial again".into(),
                req_id: Some(req_id),
                session_id: None,
            };
            inner.send(caller_device, &msg);
            return;
        }
        let pending =
            PendingRing { authority: authority.clone(), caller_device, req_id, since: Instant::now() };
        inner.pending_rings.insert(id.clone(), pending);
        let ring = RingRequest {
            session: id,
            caller,
            req_id,
            offer: req.offer,
            call_ref: req.call_ref,
            target: target.to_string(),
            devices: rows,
            place_call: place,
        };
        // In order with everything else for that node; if it is lost before it rings
        // anyone, `node_lost` tells the caller.
        inner.outbox.push((Arc::from(authority.as_str()), NodeMsg::Ring(Box::new(ring))));
    }

    /// Rings a callee this node is the authority for, with their devices on other nodes.
    fn ring_here(
        self: &Arc<Self>,
        id: SessionId,
        target: E164,
        req: Routed,
        place: Option<Option<String>>,
        rows: &[PresenceRow],
        received: Instant,
    ) {
        if let Some(extension) = place {
            let Routed { caller_device, caller_user, req_id, offer, .. } = req;
            return self.place_call(caller_device, caller_user, req_id, id, target, offer, extension);
        }
        let mut inner = self.lock();
        let elsewhere = inner.remember_rows(rows);
        self.ring(&mut inner, id, target.as_str(), req, received, &elsewhere);
    }

    /// A message from another node.
    pub fn from_node(self: &Arc<Self>, msg: NodeMsg) {
        match msg {
            NodeMsg::Deliver { device, text } => {
                let mut inner = self.lock();
                // Only to a connection here: a stale entry must not send it on again.
                if matches!(inner.devices.get(&device), Some(DeviceConn { link: Link::Local(_), .. })) {
                    inner.send_text(device, Utf8Bytes::from(text));
                }
            }
            NodeMsg::Attach { device, session, role, active, req_id, peer } => {
                let mut inner = self.lock();
                let Some(authority) = authority_of(&session).map(str::to_owned) else {
                    return;
                };
                inner.pending_rings.remove(&session);
                match inner.devices.get_mut(&device) {
                    Some(dev @ DeviceConn { link: Link::Local(_), .. }) => {
                        if !dev.sessions.contains(&session) {
                            dev.sessions.push(session.clone());
                        }
                        let part = RemotePart { authority, role, active, req_id, peer };
                        inner.remote_sessions.insert((session, device), part);
                    }
                    _ => {
                        // It went offline before this arrived.
                        if let Some(me) = inner.cluster.as_ref().map(|c| c.node.to_string()) {
                            inner
                                .outbox
                                .push((Arc::from(authority.as_str()), NodeMsg::Gone { device, node: me }));
                        }
                    }
                }
            }
            NodeMsg::Detach { device, session } => {
                let mut inner = self.lock();
                inner.remote_sessions.remove(&(session.clone(), device));
                if let Some(dev @ DeviceConn { link: Link::Local(_), .. }) = inner.devices.get_mut(&device) {
                    dev.sessions.retain(|s| *s != session);
                }
            }
            NodeMsg::Op { from, session, op } => self.remote_op(from, session, op),
            NodeMsg::Gone { device, node } => {
                let mut inner = self.lock();
                let conn = match inner.devices.get(&device) {
                    Some(DeviceConn { link: Link::Remote(n), conn_id, .. }) if **n == *node => *conn_id,
                    _ => return,
                };
                self.disconnect_locked(&mut inner, device, conn);
            }
            NodeMsg::Kick { device, code, reason } => self.kick_local(device, code, &reason),
            NodeMsg::Ring(req) => self.ring_from(*req),
        }
    }

    fn ring_from(self: &Arc<Self>, req: RingRequest) {
        tracing::debug!(session = %req.session, "ringing for another node");
        // Normalized by the node that sent it.
        let Some(target) = E164::from_normalized(&req.target) else {
            return;
        };
        self.lock().upsert_remote(&req.caller);
        let routed = Routed {
            caller_device: req.caller.device,
            caller_user: req.caller.user,
            req_id: req.req_id,
            offer: req.offer,
            call_ref: req.call_ref,
            call: None,
        };
        self.ring_here(req.session, target, routed, req.place_call, &req.devices, Instant::now());
    }

    /// A device on another node acts on a session held here.
    fn remote_op(self: &Arc<Self>, from: RemoteDevice, session: SessionId, op: DeviceOp) {
        {
            let mut inner = self.lock();
            inner.upsert_remote(&from);
            // Back (through another node) within the grace time: its sessions are its own again.
            if let Some(away) = inner.away.remove(&from.device) {
                away.timer.abort();
                for id in away.sessions {
                    inner.announce(from.device, &id);
                }
            }
        }
        match op {
            DeviceOp::Answer { accept } => self.answer(from.device, &session, accept),
            DeviceOp::Signal { data } => self.signal(from.device, &session, data),
            DeviceOp::End => self.end(from.device, &session),
            DeviceOp::Resume { role, peer } => self.resume(from.device, &session, role, &peer),
        }
    }

    /// Passes a device's message about a session another node holds on to that node.
    /// `true`: it was (or the session is known to be over); nothing more to do here.
    pub(super) fn forwarded(&self, device_id: i64, id: &SessionId, op: impl FnOnce() -> DeviceOp) -> bool {
        // A single node's ids name no node: nothing to look at (signals take this path).
        let Some(authority) = authority_of(id) else {
            return false;
        };
        let mut inner = self.lock();
        let Some(c) = inner.cluster.clone() else {
            return false;
        };
        if authority == &*c.node || inner.sessions.contains_key(id) {
            return false;
        }
        // Only ever to a node that beats: a made-up id names no subject.
        if !c.alive(authority) {
            let op = op();
            inner.remote_sessions.remove(&(id.clone(), device_id));
            if let Some(dev) = inner.devices.get_mut(&device_id) {
                dev.sessions.retain(|s| s != id);
            }
            let msg = match op {
                DeviceOp::Resume { .. } => {
                    ServerMsg::SessionEnded { session_id: id.clone(), reason: EndReason::NodeLost }
                }
                _ => session_error(
                    ErrorCode::SessionClosed,
                    format!("session {id} is over: the server node that held it stopped"),
                    id,
                ),
            };
            inner.send(device_id, &msg);
            return true;
        }
        if let Some(from) = inner.describe(device_id) {
            inner.outbox.push((Arc::from(authority), NodeMsg::Op { from, session: id.clone(), op: op() }));
        }
        true
    }

    /// A device here went offline: the nodes holding its sessions are told.
    pub(super) fn leave_remote_sessions(&self, inner: &mut Inner, device_id: i64, sessions: &[SessionId]) {
        let Some(c) = inner.cluster.clone() else {
            return;
        };
        let mut told: Vec<String> = Vec::new();
        for id in sessions {
            if let Some(part) = inner.remote_sessions.remove(&(id.clone(), device_id))
                && !told.contains(&part.authority)
            {
                let msg = NodeMsg::Gone { device: device_id, node: c.node.to_string() };
                inner.outbox.push((Arc::from(part.authority.as_str()), msg));
                told.push(part.authority);
            }
        }
    }

    /// Another node stopped (or this one lost NATS): the sessions it held end for the
    /// devices here, and its devices leave the sessions held here — ended with `node_lost`.
    pub fn node_lost(self: &Arc<Self>, node: &str) {
        let mut inner = self.lock();
        let lost: Vec<SessionId> = inner
            .pending_rings
            .iter()
            .filter(|(_, p)| p.authority == node)
            .map(|(id, _)| id.clone())
            .collect();
        for id in lost {
            if let Some(p) = inner.pending_rings.remove(&id) {
                let msg = ServerMsg::Error {
                    code: ErrorCode::NodeLost,
                    message: "the server node handling this request stopped: dial again".into(),
                    req_id: Some(p.req_id),
                    session_id: None,
                };
                inner.send(p.caller_device, &msg);
            }
        }
        let parts: Vec<(SessionId, i64)> = inner
            .remote_sessions
            .iter()
            .filter(|(_, p)| p.authority == node)
            .map(|(k, _)| k.clone())
            .collect();
        for (id, device) in parts {
            let Some(part) = inner.remote_sessions.remove(&(id.clone(), device)) else {
                continue;
            };
            if let Some(dev) = inner.devices.get_mut(&device) {
                dev.sessions.retain(|s| *s != id);
            }
            self.metrics.cluster_sessions_lost.inc();
            let msg = match (part.role, part.active) {
                (_, true) => ServerMsg::SessionEnded { session_id: id.clone(), reason: EndReason::NodeLost },
                (Role::Callee, false) => {
                    ServerMsg::InitiationClosed { session_id: id.clone(), reason: ClosedReason::NodeLost }
                }
                (Role::Caller, false) => ServerMsg::Error {
                    code: ErrorCode::NodeLost,
                    message: "the server node handling this request stopped: dial again".into(),
                    req_id: part.req_id,
                    session_id: Some(id.clone()),
                },
            };
            inner.send(device, &msg);
        }
        let gone: Vec<i64> = inner
            .devices
            .iter()
            .filter(|(_, d)| matches!(&d.link, Link::Remote(n) if &**n == node))
            .map(|(id, _)| *id)
            .collect();
        for device in gone {
            let sessions = inner.devices.get(&device).map(|d| d.sessions.clone()).unwrap_or_default();
            for id in sessions {
                if inner.sessions.contains_key(&id) {
                    self.metrics.cluster_sessions_lost.inc();
                }
                self.device_gone_from_session(&mut inner, device, &id, EndReason::NodeLost);
            }
            inner.devices.remove(&device);
        }
    }

    /// Forgets devices on other nodes that no session here needs any more, and their users.
    pub fn sweep_remote(&self) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        // Answered without ringing anyone (unavailable): nothing more comes for it.
        inner.pending_rings.retain(|_, p| p.since.elapsed() < Duration::from_secs(5));
        let away = &inner.away;
        inner.devices.retain(|id, d| {
            !(matches!(d.link, Link::Remote(_)) && d.sessions.is_empty() && !away.contains_key(id))
        });
        if inner.remote_users.is_empty() {
            return;
        }
        let mut needed: HashSet<i64> = HashSet::new();
        for d in inner.devices.values() {
            if matches!(d.link, Link::Remote(_)) {
                needed.insert(d.user_id);
            }
        }
        for s in inner.sessions.values() {
            needed.insert(s.caller_user);
            needed.insert(s.callee_user);
        }
        inner.remote_users.retain(|id, _| needed.contains(id));
    }

    /// A user changed something on another node: devices here and sessions held here follow.
    pub fn user_changed_elsewhere(&self, user: i64, change: UserChange) {
        if let UserChange::Settings { settings } = &change
            && let Some(u) = self.lock().remote_users.get_mut(&user)
        {
            u.hides_address = settings.hide_address;
        }
        self.apply_user_change(user, change);
    }

    /// Tells the other nodes of a change to a user (their devices there follow).
    pub(super) fn broadcast_user(&self, user: i64, change: UserChange) {
        let cluster = self.lock().cluster.clone();
        if let Some(c) = cluster {
            c.broadcast(&AllMsg::User { node: c.node.to_string(), user, change });
        }
    }
}

impl Inner {
    /// Knows the devices of a presence lookup that are on other nodes; returns their ids.
    pub(super) fn remember_rows(&mut self, rows: &[PresenceRow]) -> Vec<i64> {
        let Some(me) = self.cluster.as_ref().map(|c| c.node.clone()) else {
            return Vec::new();
        };
        let mut elsewhere = Vec::new();
        for r in rows.iter().filter(|r| *r.node != *me) {
            self.upsert_remote_device(r.device, r.user, &r.node, r.reported_ip, r.observed_ip);
            elsewhere.push(r.device);
        }
        elsewhere
    }
}
