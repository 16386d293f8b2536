//! Sessions that outlive a device's connection: the grace time, and restoring sessions
//! after a server restart from both devices' claims.

use super::*;

pub(super) struct Away {
    pub(super) sessions: Vec<SessionId>,
    pub(super) timer: AbortHandle,
}

pub(super) struct Claim {
    pub(super) device: i64,
    pub(super) user: i64,
    /// The claimant's own number, and the number it says the other side has.
    pub(super) number: String,
    pub(super) peer: String,
    pub(super) role: Role,
    pub(super) timer: AbortHandle,
}

impl Hub {
    /// A device did not come back in time: its sessions end for the other side.
    pub(super) fn grace_over(&self, device_id: i64) {
        let mut inner = self.lock();
        let Some(away) = inner.away.remove(&device_id) else {
            return;
        };
        for id in away.sessions {
            let Some(session) = inner.sessions.get(&id) else {
                continue;
            };
            let SessionState::Active { callee_device } = session.state else {
                continue;
            };
            let other =
                if session.caller_device == device_id { callee_device } else { session.caller_device };
            inner.remove_session(&id, "a device of the session did not come back");
            inner.send(
                other,
                &ServerMsg::SessionEnded { session_id: id.clone(), reason: EndReason::PeerDisconnected },
            );
        }
    }

    /// A device back online says it is still in session `id` (as `role`). Known here: it
    /// already is (see [`Hub::connect`]). Unknown (this server restarted): the session is
    /// restored when the other side claims it too — in the other role, each naming the
    /// other's number — within the grace time; otherwise it ends for the claimant. Session
    /// ids are random 128-bit secrets only the two devices were told.
    pub fn resume(self: &Arc<Self>, device_id: i64, id: &SessionId, role: Role, peer: &str) {
        let op = || remote_op::Resume { role, peer: peer.to_string() };
        if self.forwarded(device_id, id, op) {
            return;
        }
        let mut inner = self.lock();
        let Some(user_id) = inner.devices.get(&device_id).map(|d| d.user_id) else {
            return;
        };
        let Some(number) = inner.party(user_id).map(|u| u.number) else {
            return;
        };
        if let Some(session) = inner.sessions.get(id) {
            let mine = match session.state {
                SessionState::Active { callee_device } => {
                    callee_device == device_id || session.caller_device == device_id
                }
                SessionState::Ringing { .. } | SessionState::Placing { .. } => false,
            };
            if mine {
                inner.announce(device_id, id);
            } else {
                self.unknown_session(&mut inner, device_id, id);
            }
            return;
        }
        if inner.closed.contains_key(id) {
            // It ended while the device was away.
            let msg = ServerMsg::SessionEnded { session_id: id.clone(), reason: EndReason::PeerDisconnected };
            inner.send(device_id, &msg);
            return;
        }
        match inner.claims.remove(id) {
            Some(other)
                if other.user != user_id
                    && other.role != role
                    && other.peer == number
                    && other.number == peer
                    && inner.devices.contains_key(&other.device) =>
            {
                other.timer.abort();
                let (caller, callee) = if role == Role::Caller {
                    ((device_id, user_id), (other.device, other.user))
                } else {
                    ((other.device, other.user), (device_id, user_id))
                };
                inner.sessions.insert(
                    id.clone(),
                    Session {
                        req_id: 0,
                        offer: Offer::default(),
                        caller_user: caller.1,
                        caller_device: caller.0,
                        callee_user: callee.1,
                        state: SessionState::Active { callee_device: callee.0 },
                        relayed: false,
                        call: None,
                    },
                );
                for d in [caller.0, callee.0] {
                    if let Some(dev) = inner.devices.get_mut(&d) {
                        dev.sessions.push(id.clone());
                    }
                }
                tracing::info!(session = %id, "session restored: both devices came back");
            }
            Some(other) => {
                // Not a matching pair: the first claim stands, this one is refused.
                let timer = other.timer.clone();
                inner.claims.insert(id.clone(), Claim { timer, ..other });
                self.unknown_session(&mut inner, device_id, id);
            }
            None => {
                let hub = Arc::clone(self);
                let grace = self.cfg.reconnect_grace;
                let claim_id = id.clone();
                let timer = tokio::spawn(async move {
                    tokio::time::sleep(grace).await;
                    hub.claim_over(&claim_id);
                })
                .abort_handle();
                let claim =
                    Claim { device: device_id, user: user_id, number, peer: peer.to_string(), role, timer };
                inner.claims.insert(id.clone(), claim);
            }
        }
    }

    /// Nobody else claimed a session after a restart: it is over for the claimant.
    fn claim_over(&self, id: &SessionId) {
        let mut inner = self.lock();
        if let Some(claim) = inner.claims.remove(id) {
            inner.remember_closed(id.clone(), "the other device did not come back");
            let msg = ServerMsg::SessionEnded { session_id: id.clone(), reason: EndReason::PeerDisconnected };
            inner.send(claim.device, &msg);
        }
    }
}
