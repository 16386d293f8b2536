//! The Asterisk Manager Interface connector: logs in, places calls with `Originate`, and
//! follows each by the `ChannelId` it chose (Asterisk gives the first channel that unique id,
//! and every channel of the call carries it as `Linkedid`), so the call is known before its
//! first event. Framing: [`crate::ami`]. Events and fields as in Asterisk's AMI event
//! documentation (`OriginateResponse`, `DialBegin`, `DialEnd`, `BridgeEnter`, `Hangup`).

use super::{CallUpdate, Cmd, End, PbxHealth, Tracked};
use crate::ami::{action, parse_message, read_line, read_message};
use crate::protocol::{CallFailure, CallStage};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmiConfig {
    /// `host:5038`
    pub addr: String,
    pub username: String,
    pub secret: String,
    /// The dial-plan context the target number is dialed in.
    pub context: String,
    /// The caller's phone as a channel, `{ext}` replaced by the extension, e.g. `PJSIP/{ext}`.
    pub channel: String,
    /// Where an outside number is called (verification calls), `{number}` and `{context}`
    /// replaced, e.g. `Local/{number}@{context}` or `PJSIP/{number}@provider`.
    pub trunk: String,
}

/// How long the caller's phone rings before the PBX gives up (ms, Originate's `Timeout`).
const RING_YOUR_PHONE_MS: u64 = 30_000;
/// A keepalive `Ping` this often; no answer within [`PING_TIMEOUT`] means the link is dead.
const PING_EVERY: Duration = Duration::from_secs(20);
const PING_TIMEOUT: Duration = Duration::from_secs(10);

fn hangup_action(id: &str, channel: &str) -> String {
    action("Hangup", &[("ActionID", &format!("{id}-hangup")), ("Channel", channel), ("Cause", "16")])
}

pub(super) async fn run(cfg: AmiConfig, rx: mpsc::UnboundedReceiver<Cmd>, health: Arc<Mutex<PbxHealth>>) {
    let (addr, cfg) = (cfg.addr.clone(), Arc::new(cfg));
    super::supervise(&addr, rx, health, |rx, health, calls, attempt| {
        let cfg = cfg.clone();
        Box::pin(async move { session(&cfg, rx, health, calls, attempt).await })
    })
    .await;
}

async fn session(
    cfg: &AmiConfig,
    rx: &mut mpsc::UnboundedReceiver<Cmd>,
    health: &Mutex<PbxHealth>,
    calls: &mut HashMap<String, Tracked>,
    attempt: &mut u32,
) -> End {
    let (mut reader, mut write) = match super::connect(&cfg.addr, "the PBX", health).await {
        Ok(link) => link,
        Err(end) => return end,
    };
    let mut buf = Vec::new();
    match tokio::time::timeout(Duration::from_secs(5), read_line(&mut reader, &mut buf)).await {
        Ok(Ok(Some(banner))) if banner.starts_with("Asterisk Call Manager") => {}
        Ok(Ok(Some(other))) => {
            return End::Lost(format!("{} is not an Asterisk manager (it said {other:?})", cfg.addr));
        }
        _ => return End::Lost(format!("the PBX at {} sent no banner", cfg.addr)),
    }
    let login = action(
        "Login",
        &[
            ("ActionID", "sidecall-login"),
            ("Username", &cfg.username),
            ("Secret", &cfg.secret),
            ("Events", "call"),
        ],
    );
    if let Err(e) = write.write_all(login.as_bytes()).await {
        return End::Lost(e.to_string());
    }
    let mut logged_in = false;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    let mut pong_due: Option<tokio::time::Instant> = None;
    let mut next_ping = 0u64;
    // Extension lookups waiting for their answer, by ActionID.
    let mut checks: HashMap<String, tokio::sync::oneshot::Sender<bool>> = HashMap::new();
    let mut next_check = 0u64;
    loop {
        tokio::select! {
            read = read_message(&mut reader, &mut buf) => {
                let lines = match read {
                    Ok(Some(l)) => l,
                    Ok(None) => return End::Lost(format!("the PBX at {} closed the connection", cfg.addr)),
                    Err(e) => return End::Lost(format!("PBX connection lost: {e}")),
                };
                let msg = parse_message(&lines);
                let action_id = msg.get("ActionID").unwrap_or("");
                if !logged_in {
                    if action_id == "sidecall-login" {
                        match msg.get("Response") {
                            Some(r) if r.eq_ignore_ascii_case("Success") => {
                                logged_in = true;
                                *attempt = 0;
                                *health.lock() = PbxHealth::Ready;
                                tracing::info!(addr = %cfg.addr, "logged in to the PBX");
                            }
                            _ => return End::LoginRefused(msg.get("Message").unwrap_or("refused").to_string()),
                        }
                    }
                    continue;
                }
                if action_id.starts_with("sidecall-ping") {
                    pong_due = None;
                    continue;
                }
                if let Some(reply) = checks.remove(action_id)
                    && msg.get("Event").is_none()
                {
                    // Found; or "Unable to retrieve endpoint": not there. Any other error (no
                    // PJSIP, no permission) tells nothing: the answer is dropped.
                    if msg.get("Response").is_some_and(|r| r.eq_ignore_ascii_case("Success")) {
                        let _ = reply.send(true);
                    } else if msg.get("Message").is_some_and(|m| m.starts_with("Unable to retrieve endpoint")) {
                        let _ = reply.send(false);
                    }
                    continue;
                }
                if let Some(text) = follow(&msg, calls)
                    && let Err(e) = write.write_all(text.as_bytes()).await
                {
                    return End::Lost(e.to_string());
                }
            }
            cmd = rx.recv(), if logged_in => {
                let Some(cmd) = cmd else { return End::Stopped };
                let text = match cmd {
                    Cmd::Originate { id, ext, number, caller_id, updates } => {
                        let channel = cfg.channel.replace("{ext}", &ext);
                        let text = action("Originate", &[
                            ("ActionID", &id),
                            ("Channel", &channel),
                            ("Context", &cfg.context),
                            ("Exten", &number),
                            ("Priority", "1"),
                            ("CallerID", &format!("\"Sidecall: {number}\" <{caller_id}>")),
                            ("ChannelId", &id),
                            ("OtherChannelId", &format!("{id}-2")),
                            ("Timeout", &RING_YOUR_PHONE_MS.to_string()),
                            ("Async", "true"),
                        ]);
                        updates.send(CallUpdate::Stage(CallStage::CallingYou)).ok();
                        calls.insert(id, Tracked { updates: Some(updates), ..Default::default() });
                        text
                    }
                    Cmd::Ring { id, number, caller_id } => {
                        let channel = cfg.trunk.replace("{number}", &number).replace("{context}", &cfg.context);
                        calls.insert(id.clone(), Tracked::default());
                        // Answered, it waits two seconds and hangs up: the caller ID was the point.
                        action("Originate", &[
                            ("ActionID", &id),
                            ("Channel", &channel),
                            ("Application", "Wait"),
                            ("Data", "2"),
                            ("CallerID", &format!("\"Sidecall code\" <{caller_id}>")),
                            ("ChannelId", &id),
                            ("Timeout", &super::VERIFY_RING_MS.to_string()),
                            ("Async", "true"),
                        ])
                    }
                    Cmd::Check { ext, reply } => {
                        // Only a PJSIP endpoint can be looked up by name.
                        if !cfg.channel.starts_with("PJSIP/") {
                            continue;
                        }
                        next_check += 1;
                        let id = format!("sidecall-check-{next_check}");
                        checks.insert(id.clone(), reply);
                        action("PJSIPShowEndpoint", &[("ActionID", &id), ("Endpoint", &ext)])
                    }
                    Cmd::Hangup { id } => {
                        let Some(t) = calls.get_mut(&id) else { continue };
                        t.send(if t.answered { CallUpdate::HungUp } else { CallUpdate::Failed(CallFailure::Cancelled) });
                        t.updates = None;
                        t.cancelled = true;
                        match t.channel.clone() {
                            Some(channel) => {
                                calls.remove(&id);
                                hangup_action(&id, &channel)
                            }
                            None => continue, // hung up as soon as an event names its channel
                        }
                    }
                };
                if let Err(e) = write.write_all(text.as_bytes()).await {
                    return End::Lost(e.to_string());
                }
            }
            _ = ping.tick(), if logged_in => {
                if pong_due.is_some_and(|d| tokio::time::Instant::now() > d) {
                    return End::Lost(format!("the PBX at {} stopped answering", cfg.addr));
                }
                next_ping += 1;
                let text = action("Ping", &[("ActionID", &format!("sidecall-ping-{next_ping}"))]);
                if let Err(e) = write.write_all(text.as_bytes()).await {
                    return End::Lost(e.to_string());
                }
                pong_due.get_or_insert(tokio::time::Instant::now() + PING_TIMEOUT);
            }
        }
    }
}

/// `OriginateResponse` `Reason` (Asterisk's `AST_CONTROL_*` outcome of dialing the caller's
/// own phone) → why the call failed.
fn originate_failure(reason: Option<&str>) -> CallFailure {
    match reason {
        Some("3") => CallFailure::YourPhoneNoAnswer,
        Some("5") => CallFailure::YourPhoneBusy,
        Some("1") => CallFailure::YourPhoneRejected,
        _ => CallFailure::YourPhoneUnavailable, // 0: no such channel; 8: congestion
    }
}

/// Applies one event to the calls being followed (others' calls are ignored); returns an
/// action to send, if the event makes one due.
fn follow(msg: &crate::ami::Message, calls: &mut HashMap<String, Tracked>) -> Option<String> {
    let event = msg.get("Event").unwrap_or("");
    // Learn the caller's channel from any event about it.
    if let (Some(uid), Some(channel)) = (msg.get("Uniqueid"), msg.get("Channel"))
        && let Some(t) = calls.get_mut(uid)
        && t.channel.is_none()
        && !channel.is_empty()
    {
        t.channel = Some(channel.to_string());
        if t.cancelled {
            calls.remove(uid);
            return Some(hangup_action(uid, channel));
        }
    }
    if event == "OriginateResponse" || (msg.get("Response").is_some() && event.is_empty()) {
        let id = msg.get("ActionID")?;
        let t = calls.get_mut(id)?;
        let ok = msg.get("Response").is_some_and(|r| r.eq_ignore_ascii_case("Success"));
        if event.is_empty() {
            // The answer to the action itself: queued, or refused outright.
            if !ok {
                t.send(CallUpdate::Failed(CallFailure::PbxUnavailable));
                calls.remove(id);
            }
        } else if ok {
            if !t.dialing {
                t.dialing = true;
                t.send(CallUpdate::Stage(CallStage::Dialing));
            }
        } else {
            t.send(CallUpdate::Failed(originate_failure(msg.get("Reason"))));
            calls.remove(id);
        }
        return None;
    }
    let id = msg.get("Linkedid")?;
    let t = calls.get_mut(id)?;
    match event {
        "DialBegin" if !t.dialing => {
            t.dialing = true;
            t.send(CallUpdate::Stage(CallStage::Dialing));
        }
        "DialEnd" => match msg.get("DialStatus").unwrap_or("") {
            "ANSWER" if !t.answered => {
                t.answered = true;
                t.send(CallUpdate::Stage(CallStage::Answered));
            }
            "ANSWER" => {}
            status => {
                let why = match status {
                    "BUSY" => CallFailure::Busy,
                    "NOANSWER" => CallFailure::NoAnswer,
                    "CANCEL" => CallFailure::Cancelled,
                    "CONGESTION" | "CHANUNAVAIL" => CallFailure::Unavailable,
                    _ => CallFailure::Rejected,
                };
                t.send(CallUpdate::Failed(why));
                calls.remove(id);
            }
        },
        "BridgeEnter" if !t.answered && t.dialing => {
            t.answered = true;
            t.send(CallUpdate::Stage(CallStage::Answered));
        }
        // The caller's own channel going away ends the call.
        "Hangup" if msg.get("Uniqueid") == Some(id) => {
            t.send(if t.answered { CallUpdate::HungUp } else { CallUpdate::Failed(CallFailure::Cancelled) });
            calls.remove(id);
        }
        _ => {}
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(s: &str) -> crate::ami::Message {
        parse_message(&s.lines().map(str::to_string).collect::<Vec<_>>())
    }

    #[test]
    fn a_call_is_followed_by_its_linkedid_and_others_are_ignored() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut calls =
            HashMap::from([("c1".to_string(), Tracked { updates: Some(tx), ..Default::default() })]);
        for m in [
            "Response: Success\nActionID: c1\nMessage: Originate successfully queued",
            "Event: Newchannel\nChannel: PJSIP/201-00000007\nUniqueid: c1\nLinkedid: c1",
            "Event: OriginateResponse\nActionID: c1\nResponse: Success\nReason: 4\nUniqueid: c1",
            "Event: DialBegin\nLinkedid: other\nChannel: PJSIP/202-1",
            "Event: DialBegin\nLinkedid: c1\nChannel: PJSIP/201-1",
            "Event: DialEnd\nLinkedid: c1\nDialStatus: ANSWER",
            "Event: BridgeEnter\nLinkedid: c1",
            "Event: Hangup\nLinkedid: c1\nUniqueid: c1-2",
            "Event: Hangup\nLinkedid: c1\nUniqueid: c1",
        ] {
            follow(&msg(m), &mut calls);
        }
        let mut got = Vec::new();
        while let Ok(u) = rx.try_recv() {
            got.push(u);
        }
        assert_eq!(
            got,
            vec![
                CallUpdate::Stage(CallStage::Dialing),
                CallUpdate::Stage(CallStage::Answered),
                CallUpdate::HungUp
            ]
        );
        assert!(calls.is_empty());
    }

    #[test]
    fn a_call_cancelled_before_its_channel_is_known_is_hung_up_when_it_is() {
        let mut calls =
            HashMap::from([("c1".to_string(), Tracked { cancelled: true, ..Default::default() })]);
        let hangup = follow(
            &msg("Event: Newchannel\nChannel: PJSIP/201-00000009\nUniqueid: c1\nLinkedid: c1"),
            &mut calls,
        );
        assert!(
            hangup.is_some_and(|a| a.contains("Action: Hangup") && a.contains("Channel: PJSIP/201-00000009"))
        );
    }

    #[test]
    fn failures_are_typed() {
        for (m, want) in [
            (
                "Event: OriginateResponse\nActionID: c\nResponse: Failure\nReason: 3",
                CallFailure::YourPhoneNoAnswer,
            ),
            (
                "Event: OriginateResponse\nActionID: c\nResponse: Failure\nReason: 5",
                CallFailure::YourPhoneBusy,
            ),
            (
                "Event: OriginateResponse\nActionID: c\nResponse: Failure\nReason: 0",
                CallFailure::YourPhoneUnavailable,
            ),
            ("Event: DialEnd\nLinkedid: c\nDialStatus: BUSY", CallFailure::Busy),
            ("Event: DialEnd\nLinkedid: c\nDialStatus: NOANSWER", CallFailure::NoAnswer),
            ("Event: DialEnd\nLinkedid: c\nDialStatus: CHANUNAVAIL", CallFailure::Unavailable),
        ] {
            let (tx, mut rx) = mpsc::unbounded_channel();
            let mut calls = HashMap::from([(
                "c".to_string(),
                Tracked { updates: Some(tx), dialing: true, ..Default::default() },
            )]);
            follow(&msg(m), &mut calls);
            assert_eq!(rx.try_recv().ok(), Some(CallUpdate::Failed(want)), "{m}");
            assert!(calls.is_empty());
        }
    }
}
