//! The FreeSWITCH event socket (mod_event_socket, inbound) connector: `auth`, then
//! `event plain CHANNEL_ANSWER CHANNEL_BRIDGE CHANNEL_HANGUP_COMPLETE BACKGROUND_JOB`, and
//! `bgapi originate {origination_uuid=…}CALLER NUMBER XML CONTEXT` to place a call; the call
//! is followed by the uuid chosen here. Framing as in FreeSWITCH's "mod_event_socket"
//! documentation: header lines ending with an empty line, a `Content-Length` body after
//! them, and plain events whose body is itself headers (values URL-encoded), optionally with
//! a body of their own (a background job's result).

use super::{CallUpdate, Cmd, End, PbxHealth, Tracked};
use crate::ami::read_line;
use crate::protocol::{CallFailure, CallStage};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EslConfig {
    /// `host:8021`
    pub addr: String,
    pub password: String,
    /// The caller's phone as a dial string, `{ext}` replaced by the extension (`user/{ext}`).
    pub caller: String,
    /// The dial-plan context the target number is dialed in (`XML CONTEXT`).
    pub context: String,
    /// Where an outside number is called (verification calls), `{number}` and `{context}`
    /// replaced, e.g. `loopback/{number}/{context}` or `sofia/gateway/provider/{number}`.
    pub trunk: String,
}

/// Largest body accepted from the event socket.
const MAX_BODY: usize = 256 * 1024;

/// One frame: its headers and its body.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Frame {
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Frame {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str())
    }
}

/// `Key: Value` lines (values URL-decoded when `decode`), up to an empty line.
fn parse_headers(text: &str, decode: bool) -> (Vec<(String, String)>, &str) {
    let mut headers = Vec::new();
    let mut rest = text;
    while let Some((line, after)) = rest.split_once('\n') {
        rest = after;
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            let v = v.trim();
            let v = if decode {
                url::form_urlencoded::parse(format!("v={}", v.replace('+', "%2B")).as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_else(|| v.to_string())
            } else {
                v.to_string()
            };
            headers.push((k.trim().to_string(), v));
        }
    }
    (headers, rest)
}

/// Reads one frame. `None`: the connection closed.
pub async fn read_frame<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<Frame>> {
    let mut headers = Vec::new();
    loop {
        match read_line(r, buf).await? {
            None => return Ok(None),
            Some(l) if l.is_empty() && headers.is_empty() => continue,
            Some(l) if l.is_empty() => break,
            Some(l) => {
                if let Some((k, v)) = l.split_once(':')
                    && headers.len() < crate::ami::MAX_LINES
                {
                    headers.push((k.trim().to_string(), v.trim().to_string()));
                }
            }
        }
    }
    let mut frame = Frame { headers, body: String::new() };
    if let Some(len) = frame.get("Content-Length").and_then(|l| l.parse::<usize>().ok()) {
        if len > MAX_BODY {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "event body too large"));
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).await?;
        frame.body = String::from_utf8_lossy(&body).into_owned();
    }
    Ok(Some(frame))
}

/// A plain event's own headers (and its body, e.g. a background job's result).
pub fn event(frame: &Frame) -> Option<Frame> {
    if frame.get("Content-Type") != Some("text/event-plain") {
        return None;
    }
    let (headers, rest) = parse_headers(&frame.body, true);
    let ev = Frame { headers, body: String::new() };
    let body = match ev.get("Content-Length").and_then(|l| l.parse::<usize>().ok()) {
        Some(n) => rest.get(..n.min(rest.len())).unwrap_or("").to_string(),
        None => String::new(),
    };
    Some(Frame { body, ..ev })
}

pub(super) async fn run(cfg: EslConfig, rx: mpsc::UnboundedReceiver<Cmd>, health: Arc<Mutex<PbxHealth>>) {
    let (addr, cfg) = (cfg.addr.clone(), Arc::new(cfg));
    super::supervise(&addr, rx, health, |rx, health, calls, attempt| {
        let cfg = cfg.clone();
        Box::pin(async move { session(&cfg, rx, health, calls, attempt).await })
    })
    .await;
}

/// A command line for the event socket; line breaks in values cannot start another command.
fn command(text: &str) -> String {
    format!("{}\n\n", text.replace(['\r', '\n'], ""))
}

/// Only what a dial string may carry of a number or an extension.
fn dialable(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_alphanumeric() || "+*#_-.@".contains(*c)).collect()
}

async fn session(
    cfg: &EslConfig,
    rx: &mut mpsc::UnboundedReceiver<Cmd>,
    health: &Mutex<PbxHealth>,
    calls: &mut HashMap<String, Tracked>,
    attempt: &mut u32,
) -> End {
    let (mut reader, mut write) = match super::connect(&cfg.addr, "FreeSWITCH", health).await {
        Ok(link) => link,
        Err(end) => return end,
    };
    let mut buf = Vec::new();
    match tokio::time::timeout(Duration::from_secs(5), read_frame(&mut reader, &mut buf)).await {
        Ok(Ok(Some(f))) if f.get("Content-Type") == Some("auth/request") => {}
        _ => return End::Lost(format!("{} is not a FreeSWITCH event socket", cfg.addr)),
    }
    if let Err(e) = write.write_all(command(&format!("auth {}", cfg.password)).as_bytes()).await {
        return End::Lost(e.to_string());
    }
    match read_frame(&mut reader, &mut buf).await {
        Ok(Some(f)) if f.get("Reply-Text").is_some_and(|r| r.starts_with("+OK")) => {}
        Ok(Some(f)) => return End::LoginRefused(f.get("Reply-Text").unwrap_or("refused").to_string()),
        _ => return End::Lost(format!("FreeSWITCH at {} closed the connection", cfg.addr)),
    }
    let subscribe =
        command("event plain CHANNEL_ANSWER CHANNEL_BRIDGE CHANNEL_HANGUP_COMPLETE BACKGROUND_JOB");
    if let Err(e) = write.write_all(subscribe.as_bytes()).await {
        return End::Lost(e.to_string());
    }
    *attempt = 0;
    *health.lock() = PbxHealth::Ready;
    tracing::info!(addr = %cfg.addr, "logged in to FreeSWITCH");
    // Background jobs: Job-UUID → call.
    let mut jobs: HashMap<String, String> = HashMap::new();
    loop {
        tokio::select! {
            read = read_frame(&mut reader, &mut buf) => {
                let frame = match read {
                    Ok(Some(f)) => f,
                    Ok(None) => return End::Lost(format!("FreeSWITCH at {} closed the connection", cfg.addr)),
                    Err(e) => return End::Lost(format!("FreeSWITCH connection lost: {e}")),
                };
                if frame.get("Content-Type") == Some("text/disconnect-notice") {
                    return End::Lost(format!("FreeSWITCH at {} hung up the event socket", cfg.addr));
                }
                if let Some(ev) = event(&frame) {
                    follow(&ev, calls, &mut jobs);
                }
            }
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { return End::Stopped };
                let text = match cmd {
                    Cmd::Originate { id, ext, number, caller_id, updates } => {
                        let caller = cfg.caller.replace("{ext}", &dialable(&ext));
                        let vars = format!(
                            "{{origination_uuid={id},origination_caller_id_name=Sidecall,origination_caller_id_number={},effective_caller_id_number={}}}",
                            dialable(&number),
                            dialable(&caller_id)
                        );
                        let job = format!("{id}-job");
                        jobs.insert(job.clone(), id.clone());
                        updates.send(CallUpdate::Stage(CallStage::CallingYou)).ok();
                        calls.insert(id, Tracked { updates: Some(updates), ..Default::default() });
                        let line = format!(
                            "bgapi originate {vars}{caller} {} XML {}",
                            dialable(&number),
                            dialable(&cfg.context)
                        );
                        format!("{}\nJob-UUID: {job}\n\n", line.replace(['\r', '\n'], ""))
                    }
                    // Not asked of FreeSWITCH (a user's directory domain is not known here).
                    Cmd::Check { .. } => continue,
                    Cmd::Ring { id, number, caller_id } => {
                        let trunk = cfg
                            .trunk
                            .replace("{number}", &dialable(&number))
                            .replace("{context}", &dialable(&cfg.context));
                        let vars = format!(
                            "{{origination_uuid={id},origination_caller_id_name=Sidecall,origination_caller_id_number={},originate_timeout={}}}",
                            dialable(&caller_id),
                            super::VERIFY_RING_MS / 1000
                        );
                        calls.insert(id, Tracked::default());
                        command(&format!("bgapi originate {vars}{trunk} &sleep(2000)"))
                    }
                    Cmd::Hangup { id } => {
                        let Some(t) = calls.remove(&id) else { continue };
                        t.send(if t.answered { CallUpdate::HungUp } else { CallUpdate::Failed(CallFailure::Cancelled) });
                        command(&format!("bgapi uuid_kill {id}"))
                    }
                };
                if let Err(e) = write.write_all(text.as_bytes()).await {
                    return End::Lost(e.to_string());
                }
            }
        }
    }
}

/// Why a leg ended, by FreeSWITCH hangup cause, for the target's leg.
fn target_failure(cause: &str) -> CallFailure {
    match cause {
        "USER_BUSY" => CallFailure::Busy,
        "NO_ANSWER" | "NO_USER_RESPONSE" | "ALLOTTED_TIMEOUT" => CallFailure::NoAnswer,
        "CALL_REJECTED" => CallFailure::Rejected,
        "NORMAL_CLEARING" | "ORIGINATOR_CANCEL" => CallFailure::Cancelled,
        _ => CallFailure::Unavailable,
    }
}

/// …and for the caller's own phone, before it was picked up.
fn caller_failure(cause: &str) -> CallFailure {
    match cause {
        "NO_ANSWER" | "NO_USER_RESPONSE" | "ALLOTTED_TIMEOUT" => CallFailure::YourPhoneNoAnswer,
        "USER_BUSY" => CallFailure::YourPhoneBusy,
        "CALL_REJECTED" => CallFailure::YourPhoneRejected,
        _ => CallFailure::YourPhoneUnavailable,
    }
}

/// Applies one event to the calls being followed (others' are ignored).
fn follow(ev: &Frame, calls: &mut HashMap<String, Tracked>, jobs: &mut HashMap<String, String>) {
    let name = ev.get("Event-Name").unwrap_or("");
    if name == "BACKGROUND_JOB" {
        let Some(id) = ev.get("Job-UUID").and_then(|j| jobs.remove(j)) else { return };
        // `+OK uuid` once the caller picked up; `-ERR CAUSE` when the originate failed.
        if let Some(cause) = ev.body.trim().strip_prefix("-ERR")
            && let Some(t) = calls.remove(&id)
        {
            t.send(CallUpdate::Failed(caller_failure(cause.trim())));
        }
        return;
    }
    let Some(id) = ev.get("Unique-ID") else { return };
    let Some(t) = calls.get_mut(id) else { return };
    match name {
        "CHANNEL_ANSWER" if !t.dialing => {
            t.dialing = true;
            t.send(CallUpdate::Stage(CallStage::Dialing));
        }
        "CHANNEL_BRIDGE" if !t.answered => {
            t.answered = true;
            t.send(CallUpdate::Stage(CallStage::Answered));
        }
        "CHANNEL_HANGUP_COMPLETE" => {
            let cause = ev.get("Hangup-Cause").unwrap_or("");
            let update = if t.answered {
                CallUpdate::HungUp
            } else if t.dialing {
                CallUpdate::Failed(target_failure(ev.get("variable_originate_disposition").unwrap_or(cause)))
            } else {
                CallUpdate::Failed(caller_failure(cause))
            };
            t.send(update);
            calls.remove(id);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::BufReader;

    #[tokio::test]
    async fn frames_and_plain_events() {
        let body = "Event-Name: BACKGROUND_JOB\nJob-UUID: j1\nContent-Length: 14\n\n-ERR NO_ANSWER";
        let text = format!(
            "Content-Type: auth/request\n\nContent-Length: {}\nContent-Type: text/event-plain\n\n{body}",
            body.len()
        );
        let mut r = BufReader::new(text.as_bytes());
        let mut buf = Vec::new();
        let auth = read_frame(&mut r, &mut buf).await.expect("read").expect("frame");
        assert_eq!(auth.get("content-type"), Some("auth/request"));
        let f = read_frame(&mut r, &mut buf).await.expect("read").expect("frame");
        let ev = event(&f).expect("event");
        assert_eq!(ev.get("Job-UUID"), Some("j1"));
        assert_eq!(ev.body, "-ERR NO_ANSWER");
        let (h, _) = parse_headers("Caller-Caller-ID-Name: Alice%20M%C3%BCller\n\n", true);
        assert_eq!(h[0].1, "Alice Müller");
        assert!(read_frame(&mut r, &mut buf).await.expect("read").is_none());
    }

    #[test]
    fn a_call_is_followed_by_its_uuid() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut calls =
            HashMap::from([("u1".to_string(), Tracked { updates: Some(tx), ..Default::default() })]);
        let mut jobs = HashMap::from([("u1-job".to_string(), "u1".to_string())]);
        let ev = |s: &str| Frame { headers: parse_headers(&format!("{s}\n\n"), true).0, body: String::new() };
        for e in [
            "Event-Name: CHANNEL_ANSWER\nUnique-ID: other",
            "Event-Name: CHANNEL_ANSWER\nUnique-ID: u1",
            "Event-Name: CHANNEL_BRIDGE\nUnique-ID: u1",
            "Event-Name: CHANNEL_HANGUP_COMPLETE\nUnique-ID: u1\nHangup-Cause: NORMAL_CLEARING",
        ] {
            follow(&ev(e), &mut calls, &mut jobs);
        }
        let got: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(
            got,
            vec![
                CallUpdate::Stage(CallStage::Dialing),
                CallUpdate::Stage(CallStage::Answered),
                CallUpdate::HungUp
            ]
        );
        assert!(dialable("0151 234;bad|x") == "0151234badx");
    }
}
