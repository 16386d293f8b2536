//! An access request: from the dialed number to the callee's ringing devices, and the
//! answer timeout.

use super::*;

impl Hub {
    /// Handles an access request from `device_id`.
    pub fn access_request(self: &Arc<Self>, device_id: i64, req: AccessRequest, received: Instant) {
        let AccessRequest { req_id, target, offer, region, call_ref, place_call, extension } = req;
        self.metrics.access_requests.inc();
        let mut inner = self.lock();
        let Some(caller_user) = inner.devices.get(&device_id).map(|d| d.user_id) else {
            return;
        };
        let Some(caller) = inner.users.get(&caller_user) else {
            return;
        };
        let region = region.unwrap_or_else(|| caller.region.clone());
        let caller_number = caller.number.clone();
        let cluster = inner.cluster.clone();
        // The number of someone online here or in the cluster, dialed in E.164 form, was
        // checked when they registered: the numbering plan is not read again (it cost a node
        // ~14 % of its CPU in the registry benchmark).
        let known = E164::from_normalized(target.trim()).filter(|n| {
            inner.by_number.contains_key(n.as_str()) || cluster.as_ref().is_some_and(|c| c.knows(n.as_str()))
        });
        let normalized = match known {
            Some(n) => Ok(n),
            None => number::normalize(&target, Some(&region)),
        };
        let target: E164 = match normalized {
            Ok(n) => n,
            Err(e) => {
                self.tell_outcome(
                    &mut inner,
                    device_id,
                    req_id,
                    None,
                    Outcome::InvalidNumber { reason: clip(e.to_string()) },
                );
                return;
            }
        };
        if target.as_str() == caller_number {
            self.metrics
                .protocol_errors
                .get_or_create(&vec![("code", ErrorCode::SelfRequest.as_str())])
                .inc();
            inner.send(
                device_id,
                &ServerMsg::Error {
                    code: ErrorCode::SelfRequest,
                    message: "that is your own number: dial the person you are calling".into(),
                    req_id: Some(req_id),
                    session_id: None,
                },
            );
            return;
        }
        if let Some(cluster) = cluster {
            // The callee may be on any node: find where, then ring there.
            let req = Routed { caller_device: device_id, caller_user, req_id, offer, call_ref, call: None };
            let place = place_call.then_some(extension);
            drop(inner);
            let hub = Arc::clone(self);
            tokio::spawn(async move { hub.route(cluster, target, req, place, received).await });
            return;
        }
        let id = SessionId(crate::server::auth::new_session_id());
        if place_call {
            drop(inner);
            return self.place_call(device_id, caller_user, req_id, id, target, offer, extension);
        }
        let req = Routed { caller_device: device_id, caller_user, req_id, offer, call_ref, call: None };
        self.ring(&mut inner, id, target.as_str(), req, received, &[]);
    }

    /// Rings the owner of `target` for request `req` as session `id` (or tells the caller
    /// `unavailable`).
    /// `elsewhere`: the callee's devices on other nodes (cluster).
    pub(super) fn ring(
        self: &Arc<Self>,
        inner: &mut Inner,
        id: SessionId,
        target: &str,
        req: Routed,
        received: Instant,
        elsewhere: &[i64],
    ) {
        let Routed { caller_device, caller_user, req_id, offer, call_ref, call } = req;
        let Some(caller_party) = inner.party(caller_user) else {
            return;
        };
        // Unknown, offline, not accepting and do-not-disturb all look the same to the caller.
        let callee = inner.by_number.get(target).copied().and_then(|uid| {
            let u = inner.users.get(&uid)?;
            let available = u.settings.accepting_sessions
                && !u.settings.do_not_disturb
                && !u.blocked.contains(&caller_party.number);
            let mut devices = u.devices.clone();
            devices.extend(elsewhere.iter().filter(|d| !u.devices.contains(d)));
            (available && !devices.is_empty()).then_some((uid, devices))
        });
        let Some((callee_user, callee_devices)) = callee else {
            self.tell_outcome(inner, caller_device, req_id, None, Outcome::Unavailable);
            return;
        };
        if !inner.may_ring(callee_user, caller_user, received) {
            // Many callers at once: the same answer as everything else that does not ring.
            self.metrics.rings_refused.inc();
            self.tell_outcome(inner, caller_device, req_id, None, Outcome::Unavailable);
            return;
        }
        let initiation = encode(&ServerMsg::Initiation {
            session_id: id.clone(),
            caller: caller_party,
            offer,
            call_ref,
            expires_in_ms: self.cfg.answer_timeout.as_millis() as u64,
        });
        let mut rung = Vec::with_capacity(callee_devices.len());
        for d in callee_devices {
            if inner.send_text(d, initiation.clone())
                && let Some(dev) = inner.devices.get_mut(&d)
            {
                dev.sessions.push(id.clone());
                rung.push(d);
            }
        }
        if rung.is_empty() {
            self.tell_outcome(inner, caller_device, req_id, None, Outcome::Unavailable);
            return;
        }
        if let Some(dev) = inner.devices.get_mut(&caller_device)
            && !dev.sessions.contains(&id)
        {
            dev.sessions.push(id.clone());
        }
        let hub = Arc::clone(self);
        let timeout_id = id.clone();
        let timeout = self.cfg.answer_timeout;
        let timer = tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            hub.time_out(&timeout_id);
        })
        .abort_handle();
        inner.sessions.insert(
            id.clone(),
            Session {
                req_id,
                offer,
                caller_user,
                caller_device,
                callee_user,
                state: SessionState::Ringing {
                    devices: rung.clone(),
                    timer: Some(timer),
                    since: Instant::now(),
                },
                relayed: false,
                call,
            },
        );
        for d in rung.into_iter().chain([caller_device]) {
            inner.announce(d, &id);
        }
        inner.send(caller_device, &ServerMsg::AccessPending { req_id, session_id: id });
        self.metrics.dispatch_seconds.observe(received.elapsed().as_secs_f64());
    }

    fn time_out(&self, id: &SessionId) {
        let mut inner = self.lock();
        let Some(session) = inner.sessions.get(id) else {
            return;
        };
        let SessionState::Ringing { devices, .. } = &session.state else {
            return;
        };
        let (caller, req_id, devices) = (session.caller_device, session.req_id, devices.clone());
        inner.remove_session(id, "it timed out without an answer");
        inner.close_initiation(&devices, id, ClosedReason::TimedOut);
        self.tell_outcome(&mut inner, caller, req_id, Some(id), Outcome::TimedOut);
    }
}
