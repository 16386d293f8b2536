//! Asterisk Manager Interface (TCP 5038): log in, then follow `DialBegin`, `DialEnd`,
//! `Newstate` and `Hangup` for the user's own extension, tying a call's legs together by
//! `Linkedid`. Messages are `Key: Value` lines ending with an empty line; the server starts
//! with a banner line (`Asterisk Call Manager/…`).

use super::{CallEvent, Emitter, WatchError, WatcherStatus, backoff, connect_keepalive, read_line};
use std::collections::{HashMap, HashSet};
use tokio::io::{AsyncWriteExt, BufReader};

use crate::ami::read_message;
pub use crate::ami::{Message, parse_message};

#[derive(Clone, Debug)]
pub struct AmiConfig {
    /// `host:5038`
    pub addr: String,
    pub username: String,
    pub secret: String,
    /// The user's extension, e.g. `201` (matches channels `PJSIP/201-…`, `SIP/201-…`).
    pub extension: String,
}

/// Whether a channel name belongs to `ext` (`TECH/ext-uniqueid`).
fn is_ours(channel: &str, ext: &str) -> bool {
    channel.split_once('/').map(|(_, rest)| rest.split('-').next() == Some(ext)).unwrap_or(false)
}

/// Turns AMI events into call events for one extension.
#[derive(Default)]
pub struct Tracker {
    /// Linkedids of calls of ours that are going on.
    calls: HashSet<String>,
    /// Linkedid → whether it was announced connected.
    connected: HashMap<String, bool>,
}

impl Tracker {
    pub fn event(&mut self, msg: &Message, ext: &str) -> Option<CallEvent> {
        let event = msg.get("Event")?;
        let linked = msg.get("Linkedid").or_else(|| msg.get("Uniqueid"))?.to_string();
        let call_ref = format!("ami:{linked}");
        let channel = msg.get("Channel").unwrap_or("");
        let dest = msg.get("DestChannel").unwrap_or("");
        match event {
            "DialBegin" if is_ours(channel, ext) => {
                let number = msg
                    .get("DestCallerIDNum")
                    .filter(|n| !n.is_empty() && *n != "<unknown>")
                    .or_else(|| msg.get("DialString").map(|d| d.rsplit('/').next().unwrap_or(d)))?
                    .to_string();
                if !self.calls.insert(linked) {
                    return None;
                }
                Some(CallEvent::Outgoing { call_ref, number })
            }
            "DialBegin" if is_ours(dest, ext) => {
                if !self.calls.insert(linked) {
                    return None;
                }
                let caller =
                    msg.get("CallerIDNum").filter(|n| !n.is_empty() && *n != "<unknown>").map(str::to_string);
                Some(CallEvent::Incoming { call_ref, caller })
            }
            "DialEnd" if self.calls.contains(&linked) && msg.get("DialStatus") == Some("ANSWER") => {
                (!self.connected.insert(linked, true).unwrap_or(false))
                    .then_some(CallEvent::Connected { call_ref })
            }
            "Newstate" if self.calls.contains(&linked) && msg.get("ChannelStateDesc") == Some("Up") => {
                (!self.connected.insert(linked, true).unwrap_or(false))
                    .then_some(CallEvent::Connected { call_ref })
            }
            "Hangup" if self.calls.contains(&linked) && (is_ours(channel, ext) || channel.is_empty()) => {
                self.calls.remove(&linked);
                self.connected.remove(&linked);
                Some(CallEvent::Ended { call_ref })
            }
            _ => None,
        }
    }
}

/// Connects and logs in once (for "test connection").
pub async fn probe(cfg: &AmiConfig) -> Result<(), WatchError> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let out = Emitter::new(super::Source::Ami, tx);
    let mut attempt = 0;
    let sess = session(cfg, &out, &mut attempt);
    tokio::pin!(sess);
    let connected = async {
        while let Some(ev) = rx.recv().await {
            if matches!(ev, super::WatcherEvent::Status(_, WatcherStatus::Connected)) {
                return;
            }
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = connected => Ok(()),
        e = &mut sess => Err(e),
        _ = tokio::time::sleep(std::time::Duration::from_secs(8)) => Err(WatchError::Timeout(8)),
    }
}

/// Logs in and follows the extension's calls, reconnecting with backoff; a refused login
/// stops the watcher with a clear status (retrying would only lock the account).
pub async fn run(cfg: AmiConfig, out: Emitter) {
    let mut attempt = 0u32;
    while !out.closed() {
        out.status(WatcherStatus::Connecting);
        let end = session(&cfg, &out, &mut attempt).await;
        let reason = end.to_string();
        if end.is_permanent() {
            tracing::warn!("AMI: {reason}");
            out.status(WatcherStatus::Failed { reason });
            return;
        }
        let wait = backoff(attempt);
        attempt = attempt.saturating_add(1);
        out.status(WatcherStatus::Retrying { reason, retry_in_ms: wait.as_millis() as u64 });
        tokio::time::sleep(wait).await;
    }
}

/// One connection, until it ends (it always ends with why).
async fn session(cfg: &AmiConfig, out: &Emitter, attempt: &mut u32) -> WatchError {
    let stream = match connect_keepalive(&cfg.addr).await {
        Ok(s) => s,
        Err(source) => return WatchError::Connect { addr: cfg.addr.clone(), source, hint: "" },
    };
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    match read_line(&mut reader, &mut buf).await {
        Ok(Some(banner)) if banner.starts_with("Asterisk Call Manager") => {}
        Ok(Some(other)) => return WatchError::WrongService { addr: cfg.addr.clone(), said: other },
        Ok(None) => return WatchError::Closed("the manager"),
        Err(e) => return WatchError::Lost(e),
    }
    let login = crate::ami::action(
        "Login",
        &[
            ("ActionID", "sidecall-login"),
            ("Username", &cfg.username),
            ("Secret", &cfg.secret),
            ("Events", "call"),
        ],
    );
    if let Err(e) = reader.get_mut().write_all(login.as_bytes()).await {
        return WatchError::Lost(e);
    }
    let mut tracker = Tracker::default();
    let mut logged_in = false;
    loop {
        let lines = match read_message(&mut reader, &mut buf).await {
            Ok(Some(lines)) => lines,
            Ok(None) => return WatchError::Closed("the manager"),
            Err(e) => return WatchError::Lost(e),
        };
        let msg = parse_message(&lines);
        if !logged_in {
            match (msg.get("Response"), msg.get("ActionID")) {
                (Some("Success"), _) => {
                    logged_in = true;
                    *attempt = 0;
                    out.status(WatcherStatus::Connected);
                }
                (Some("Error"), _) => {
                    return WatchError::LoginRefused(msg.get("Message").unwrap_or("refused").to_string());
                }
                _ => {}
            }
            continue;
        }
        if let Some(ev) = tracker.event(&msg, &cfg.extension)
            && !out.call(ev)
        {
            return WatchError::Stopped;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(s: &str) -> Message {
        parse_message(&s.lines().map(str::to_string).collect::<Vec<_>>())
    }

    #[test]
    fn an_outgoing_call_from_201() {
        let mut t = Tracker::default();
        let begin = msg(
            "Event: DialBegin\nChannel: PJSIP/201-00000001\nLinkedid: 1700.1\nDestCallerIDNum: 015123456789\nDialString: trunk/015123456789",
        );
        assert_eq!(
            t.event(&begin, "201"),
            Some(CallEvent::Outgoing { call_ref: "ami:1700.1".into(), number: "015123456789".into() })
        );
        assert_eq!(t.event(&begin, "201"), None, "a second leg is the same call");
        let end = msg("Event: DialEnd\nChannel: PJSIP/201-00000001\nLinkedid: 1700.1\nDialStatus: ANSWER");
        assert_eq!(t.event(&end, "201"), Some(CallEvent::Connected { call_ref: "ami:1700.1".into() }));
        let other = msg("Event: Hangup\nChannel: PJSIP/202-00000003\nLinkedid: 1800.1");
        assert_eq!(t.event(&other, "201"), None, "someone else's call");
        let hang = msg("Event: Hangup\nChannel: PJSIP/201-00000001\nLinkedid: 1700.1\nCause: 16");
        assert_eq!(t.event(&hang, "201"), Some(CallEvent::Ended { call_ref: "ami:1700.1".into() }));
        assert!(!is_ours("PJSIP/2010-0001", "201"));
    }

    #[test]
    fn keys_ignore_case_and_junk_lines() {
        let m = msg("event: DialBegin\nno colon here\n: empty key\nCHANNEL: SIP/201-1");
        assert_eq!(m.get("Event"), Some("DialBegin"));
        assert_eq!(m.get("channel"), Some("SIP/201-1"));
    }
}
