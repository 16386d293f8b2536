//! What the phone does (the call watchers report it) and placing calls from the user's own
//! FRITZ!Box: when to request the session, and ending it with the call.

use super::*;
use crate::number::Dialed;

/// The *Call* button without a PBX on the server: the user's FRITZ!Box places the call, and
/// its call monitor's CONNECT for it requests the session.
pub(super) fn fritz_dial(m: &mut Model, target: String, fx: &mut Vec<Effect>) {
    let Some(cfg) = m.view.settings.fritz.tr064() else { return };
    let region = m.view.settings.region.clone();
    let number = match crate::number::normalize(&target, Some(&region)) {
        Ok(n) => n.to_string(),
        Err(e) => {
            m.view.notice = Some(e.to_string());
            return;
        }
    };
    m.fritz_dialed = Some(number.clone());
    fx.push(Effect::FritzDial(cfg, number));
}

pub(super) fn watcher_event(m: &mut Model, ev: WatcherEvent, clock: Clock, fx: &mut Vec<Effect>) {
    if let WatcherEvent::Call(_, call) = &ev {
        let s = &m.view.settings;
        let area = (!s.area_code.trim().is_empty()).then_some(s.area_code.as_str());
        m.recent_calls.observe(call, clock.now, &s.region, area);
    }
    let v = &mut m.view;
    match ev {
        WatcherEvent::Status(src, st) => match v.watchers.iter_mut().find(|(s, _)| *s == src) {
            Some(slot) => slot.1 = st,
            None => v.watchers.push((src, st)),
        },
        WatcherEvent::Call(src, CallEvent::Outgoing { call_ref, number }) => {
            let s = &v.settings;
            let area = (!s.area_code.trim().is_empty()).then_some(s.area_code.as_str());
            let ours = src == Source::Fritz
                && m.fritz_dialed.as_ref().is_some_and(|d| {
                    matches!(crate::number::read_dialed(&number, &s.region, area), Ok(Dialed::Number(n)) if n.as_str() == d)
                });
            if ours {
                // The call the box placed for the Call button: the session once it connects.
                m.fritz_dialed = None;
                m.awaiting_answer = Some((call_ref, number));
            } else if v.settings.start_when == StartWhen::Answered && src != Source::Tel {
                // Wait for the other side to pick up the phone.
                m.awaiting_answer = Some((call_ref, number));
            } else if src == Source::Tel && v.settings.tel_places_call && v.can_place_calls {
                // The server places the phone call; the session rings once it is answered.
                dial(m, number, Offer { files: true, video: false }, None, true, fx);
            } else {
                phone_dialed(m, call_ref, &number, fx)
            }
        }
        WatcherEvent::Call(_, CallEvent::Connected { call_ref }) => {
            if let Some((r, number)) = m.awaiting_answer.take() {
                if r == call_ref {
                    phone_dialed(m, call_ref, &number, fx);
                } else {
                    m.awaiting_answer = Some((r, number));
                }
            }
        }
        WatcherEvent::Call(_, CallEvent::Ended { call_ref }) => {
            if m.awaiting_answer.as_ref().is_some_and(|(r, _)| *r == call_ref) {
                m.awaiting_answer = None; // never answered: no session
            }
            if v.call_prompt.as_ref().is_some_and(|(r, _)| *r == call_ref) {
                v.call_prompt = None;
            }
            if !v.settings.end_with_call || !m.client {
                return;
            }
            let ours = |r: &Option<String>| r.as_deref() == Some(call_ref.as_str());
            if let Some(a) = v.active.as_ref().filter(|a| ours(&a.call_ref)) {
                tracing::info!(%call_ref, "the phone call ended: ending the session");
                fx.push(Effect::Client(ClientCall::End { session_id: a.session_id.clone() }));
            } else if let Some(o) = v.outgoing.as_ref().filter(|o| {
                ours(&o.call_ref)
                    // Still ringing, or accepted with the start not yet seen here.
                    && matches!(o.status, OutgoingStatus::Dialing | OutgoingStatus::Ringing | OutgoingStatus::Accepted)
            }) {
                match &o.session_id {
                    Some(id) => fx.push(Effect::Client(ClientCall::End { session_id: id.clone() })),
                    // The request is out but its session id has not arrived yet (events from
                    // the phone and from the server race): end it when it does.
                    None => m.call_ended_early = Some(call_ref),
                }
            }
        }
        WatcherEvent::Call(_, CallEvent::Incoming { caller, .. }) => {
            if let Some(caller) = caller {
                super::account::caller_seen(m, &caller, fx);
            }
            recheck_ringing(m, clock, fx);
        }
    }
}

/// A request rings here, marked with what is known of it: whether the server verified the
/// caller's number, and whether the phone line vouches for it. Auto-accepted callers are
/// accepted at once, unless a watcher runs and saw no call of theirs.
pub(super) fn incoming(
    m: &mut Model,
    session_id: SessionId,
    caller: Party,
    offer: Offer,
    expires_in_ms: u64,
    clock: Clock,
    fx: &mut Vec<Effect>,
) {
    use crate::calls::linked::{CallMatch, sees_incoming};
    let v = &mut m.view;
    let call_match = sees_incoming(&v.watchers).then(|| m.recent_calls.check(&caller.number, clock.now));
    let marks = Marks { verified: caller.verified, call_match };
    let auto = v.settings.auto_accept.contains(&caller.number);
    // A request the phone line does not vouch for is never accepted unasked.
    if auto && call_match != Some(CallMatch::NotLinked) {
        tracing::info!(caller = %caller.number, "auto-accepting");
        m.auto_marks = Some((session_id.clone(), marks));
        client_call(m, ClientCall::Answer { session_id, accept: true }, fx);
        return;
    }
    let deadline = clock.now + Duration::from_millis(expires_in_ms);
    let id = session_id.clone();
    v.incoming.push(Ringing {
        session_id,
        caller: caller.clone(),
        offer,
        deadline,
        marks,
        accept_on_match: auto,
    });
    if !v.settings.ring_muted {
        fx.push(Effect::StartRing { volume: v.settings.ring_volume });
    }
    if !m.focused {
        fx.push(Effect::Notify { session_id: id, caller: caller.clone(), offer });
    }
    fx.push(Effect::Attention { caller });
}

/// A call came in on the phone: requests ringing here that it vouches for are marked, and
/// accepted if their caller is accepted automatically.
fn recheck_ringing(m: &mut Model, clock: Clock, fx: &mut Vec<Effect>) {
    use crate::calls::linked::CallMatch;
    let mut accept = Vec::new();
    for r in m.view.incoming.iter_mut().filter(|r| r.marks.call_match == Some(CallMatch::NotLinked)) {
        if m.recent_calls.check(&r.caller.number, clock.now) == CallMatch::Matches {
            r.marks.call_match = Some(CallMatch::Matches);
            if r.accept_on_match {
                accept.push(r.session_id.clone());
            }
        }
    }
    for session_id in accept {
        tracing::info!(%session_id, "the call rang on the phone: auto-accepting");
        client_call(m, ClientCall::Answer { session_id, accept: true }, fx);
    }
}

/// The phone placed a call to `raw` (as dialed).
fn phone_dialed(m: &mut Model, call_ref: String, raw: &str, fx: &mut Vec<Effect>) {
    let s = &m.view.settings;
    let area = (!s.area_code.trim().is_empty()).then_some(s.area_code.as_str());
    let number = match crate::number::read_dialed(raw, &s.region, area) {
        Ok(Dialed::Number(n)) => n.to_string(),
        Ok(Dialed::Internal(what)) => {
            tracing::info!(%what, "the phone dialed inside the phone system: no session");
            m.view.notice = Some(format!("Internal call ({what}): no session."));
            return;
        }
        Err(e) => {
            m.view.notice = Some(format!("The phone dialed {raw}, which Sidecall cannot use: {e}"));
            return;
        }
    };
    match s.on_call {
        OnCall::Off => tracing::info!(%number, "the phone dialed; automatic sessions are off"),
        OnCall::Ask => m.view.call_prompt = Some((call_ref, number)),
        OnCall::Automatic if m.view.connection != Connection::Online => {
            // Just started (a tel: link opened the app): dial once online.
            m.pending_call = Some((call_ref, number));
        }
        OnCall::Automatic => {
            if m.view.active.is_none() {
                dial(m, number, Offer { files: true, video: false }, Some(call_ref), false, fx);
            }
        }
    }
}
