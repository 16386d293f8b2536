//! Click-to-call: the session waits for the phone call the PBX places.

use super::*;

impl Hub {
    /// Click-to-call: asks the PBX to ring the caller's phone and then dial `target`; the
    /// data session rings only once the target answered (see [`Hub::call_update`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn place_call(
        self: &Arc<Self>,
        caller_device: i64,
        caller_user: i64,
        req_id: u64,
        id: SessionId,
        target: E164,
        offer: Offer,
        extension: Option<String>,
    ) {
        let fail = |hub: &Hub, why: CallFailure| {
            let mut inner = hub.lock();
            hub.tell_outcome(&mut inner, caller_device, req_id, None, Outcome::CallFailed { reason: why });
        };
        let Some(pbx) = self.pbx.read().clone() else {
            return fail(self, CallFailure::PbxUnavailable);
        };
        let Some(extension) = extension else {
            return fail(self, CallFailure::NoExtension);
        };
        let caller_number = self.lock().party(caller_user).map(|u| u.number).unwrap_or_default();
        let mut placed = match pbx.originate(&extension, target.as_str(), &caller_number) {
            Ok(p) => p,
            Err(why) => return fail(self, why),
        };
        let call_id = placed.id.clone();
        {
            let mut inner = self.lock();
            inner.sessions.insert(
                id.clone(),
                Session {
                    req_id,
                    offer,
                    caller_user,
                    caller_device,
                    callee_user: 0,
                    state: SessionState::Placing { target: target.to_string() },
                    relayed: false,
                    call: Some(call_id.clone()),
                },
            );
            inner.announce(caller_device, &id);
        }
        tracing::info!(session = %id, call = %call_id, %extension, "placing a call through the PBX");
        let hub = Arc::clone(self);
        tokio::spawn(async move {
            while let Some(update) = placed.updates.recv().await {
                let last = matches!(update, CallUpdate::Failed(_) | CallUpdate::HungUp);
                hub.call_update(&id, update);
                if last {
                    break;
                }
            }
        });
    }

    /// The placed call was answered: the data session rings now.
    fn ring_after_call(
        self: &Arc<Self>,
        inner: &mut Inner,
        id: SessionId,
        target: &str,
        req: Routed,
        elsewhere: &[i64],
    ) {
        let caller_device = req.caller_device;
        self.ring(inner, id.clone(), target, req, Instant::now(), elsewhere);
        if !inner.sessions.contains_key(&id) {
            // Not rung (no such user, unavailable): the phone call goes on alone.
            inner.detach(caller_device, &id);
            inner.remember_closed(id, "the callee does not take data sessions");
        }
    }

    /// A placed call moved on.
    fn call_update(self: &Arc<Self>, id: &SessionId, update: CallUpdate) {
        let mut inner = self.lock();
        let Some(session) = inner.sessions.get(id) else {
            return; // ended meanwhile (cancelled, or the callee was unavailable)
        };
        let (caller_device, req_id) = (session.caller_device, session.req_id);
        match (&session.state, update) {
            (SessionState::Placing { target }, CallUpdate::Stage(stage)) => {
                let target = target.clone();
                inner.send(caller_device, &ServerMsg::CallProgress { req_id, session_id: id.clone(), stage });
                if stage == CallStage::Answered {
                    // Only now does the data session ring on the callee's desktops.
                    let session = inner.sessions.remove(id);
                    let (caller_user, offer, call) = match session {
                        Some(s) => (s.caller_user, s.offer, s.call),
                        None => return,
                    };
                    let call_ref = call.as_ref().map(|c| format!("pbx:{c}"));
                    let req = Routed { caller_device, caller_user, req_id, offer, call_ref, call };
                    if let Some(cluster) = inner.cluster.clone() {
                        // The callee's devices may be on other nodes by now: look them up.
                        drop(inner);
                        let hub = Arc::clone(self);
                        let id = id.clone();
                        tokio::spawn(async move {
                            let rows = cluster.lookup(&target).await.unwrap_or_default();
                            let mut inner = hub.lock();
                            let elsewhere = inner.remember_rows(&rows);
                            hub.ring_after_call(&mut inner, id, &target, req, &elsewhere);
                        });
                        return;
                    }
                    self.ring_after_call(&mut inner, id.clone(), &target, req, &[]);
                }
            }
            (SessionState::Placing { .. }, CallUpdate::Failed(why)) => {
                inner.remove_session(id, "the phone call did not come about");
                self.tell_outcome(
                    &mut inner,
                    caller_device,
                    req_id,
                    Some(id),
                    Outcome::CallFailed { reason: why },
                );
            }
            (SessionState::Placing { .. }, CallUpdate::HungUp) => {
                inner.remove_session(id, "the phone call was hung up");
                let reason = CallFailure::Cancelled;
                self.tell_outcome(
                    &mut inner,
                    caller_device,
                    req_id,
                    Some(id),
                    Outcome::CallFailed { reason },
                );
            }
            (SessionState::Ringing { devices, .. }, CallUpdate::HungUp | CallUpdate::Failed(_)) => {
                // The phone call ended before the data session was answered: it stops ringing.
                let devices = devices.clone();
                inner.remove_session(id, "the phone call ended");
                inner.close_initiation(&devices, id, ClosedReason::Cancelled);
                self.tell_outcome(&mut inner, caller_device, req_id, Some(id), Outcome::Cancelled);
            }
            (SessionState::Active { callee_device }, CallUpdate::HungUp | CallUpdate::Failed(_)) => {
                // Hanging up the phone ends the data session.
                let callee_device = *callee_device;
                inner.remove_session(id, "the phone call ended");
                for d in [caller_device, callee_device] {
                    inner.send(
                        d,
                        &ServerMsg::SessionEnded { session_id: id.clone(), reason: EndReason::CallEnded },
                    );
                }
            }
            _ => {}
        }
    }
}
