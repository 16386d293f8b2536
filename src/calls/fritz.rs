//! AVM FRITZ!Box call monitor (TCP port 1012, enabled by dialing `#96*5*` on a phone on the
//! box). One `;`-separated line per event:
//!
//! ```text
//! 25.11.26 18:02:11;CALL;0;11;4930123456;015123456789;SIP0;
//! 25.11.26 18:02:12;RING;1;030555555;4930123456;SIP0;
//! 25.11.26 18:02:15;CONNECT;0;11;015123456789;
//! 25.11.26 18:03:40;DISCONNECT;0;85;
//! ```

use super::{CallEvent, Emitter, WatchError, WatcherStatus, backoff, connect_keepalive, read_line};
use tokio::io::BufReader;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("not a call monitor line (no timestamp)")]
    NoTimestamp,
    #[error("unknown event {0:?}")]
    UnknownEvent(String),
    #[error("{0} line with too few fields")]
    Truncated(&'static str),
    #[error("connection id {0:?} is not a number")]
    BadConnectionId(String),
}

fn valid_timestamp(ts: &str) -> bool {
    // DD.MM.YY HH:MM:SS
    let b = ts.as_bytes();
    b.len() == 17
        && [0, 1, 3, 4, 6, 7, 9, 10, 12, 13, 15, 16].iter().all(|&i| b[i].is_ascii_digit())
        && b[2] == b'.'
        && b[5] == b'.'
        && b[8] == b' '
        && b[11] == b':'
        && b[14] == b':'
}

/// Parses one call-monitor line.
pub fn parse_line(line: &str) -> Result<CallEvent, ParseError> {
    let f: Vec<&str> = line.trim_end_matches(['\r', '\n']).split(';').collect();
    if f.len() < 3 || !valid_timestamp(f[0].trim()) {
        return Err(ParseError::NoTimestamp);
    }
    let conn = f[2].trim();
    if conn.is_empty() || !conn.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::BadConnectionId(conn.to_string()));
    }
    let call_ref = format!("fritz:{conn}");
    let need =
        |n: usize, what: &'static str| if f.len() >= n { Ok(()) } else { Err(ParseError::Truncated(what)) };
    match f[1] {
        "CALL" => {
            need(6, "CALL")?;
            Ok(CallEvent::Outgoing { call_ref, number: f[5].trim().to_string() })
        }
        "RING" => {
            need(5, "RING")?;
            let caller = f[3].trim();
            Ok(CallEvent::Incoming { call_ref, caller: (!caller.is_empty()).then(|| caller.to_string()) })
        }
        "CONNECT" => {
            need(5, "CONNECT")?;
            Ok(CallEvent::Connected { call_ref })
        }
        "DISCONNECT" => {
            need(4, "DISCONNECT")?;
            Ok(CallEvent::Ended { call_ref })
        }
        other => Err(ParseError::UnknownEvent(other.chars().take(32).collect())),
    }
}

/// Tries the call monitor once (for "test connection").
pub async fn probe(addr: &str) -> Result<(), WatchError> {
    connect_keepalive(addr).await.map(|_| ()).map_err(|source| connect_error(addr, source))
}

fn connect_error(addr: &str, source: std::io::Error) -> WatchError {
    let hint = ". Is the call monitor on? Dial #96*5* on a phone on the box.";
    WatchError::Connect { addr: addr.to_string(), source, hint }
}

/// Follows the call monitor at `addr` (`host:1012`) until the receiver goes away, reconnecting
/// with backoff when the box drops the socket or refuses the port (it does after a reboot).
pub async fn run(addr: String, out: Emitter) {
    let mut attempt = 0u32;
    while !out.closed() {
        out.status(WatcherStatus::Connecting);
        let reason = match connect_keepalive(&addr).await {
            Ok(stream) => {
                attempt = 0;
                tracing::info!(%addr, "call monitor connected");
                out.status(WatcherStatus::Connected);
                let mut reader = BufReader::new(stream);
                let mut buf = Vec::new();
                loop {
                    match read_line(&mut reader, &mut buf).await {
                        Ok(Some(line)) if line.trim().is_empty() => {}
                        Ok(Some(line)) => match parse_line(&line) {
                            Ok(ev) => {
                                if !out.call(ev) {
                                    return;
                                }
                            }
                            Err(e) => tracing::warn!(
                                "call monitor: ignored a line ({e}): {:?}",
                                line.chars().take(120).collect::<String>()
                            ),
                        },
                        Ok(None) => break WatchError::Closed("the box"),
                        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                            tracing::warn!("call monitor: {e}")
                        }
                        Err(e) => break WatchError::Lost(e),
                    }
                }
            }
            Err(source) => connect_error(&addr, source),
        }
        .to_string();
        let wait = backoff(attempt);
        attempt = attempt.saturating_add(1);
        tracing::info!("call monitor: {reason}; retrying in {} s", wait.as_secs());
        out.status(WatcherStatus::Retrying { reason, retry_in_ms: wait.as_millis() as u64 });
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_four_events() {
        assert_eq!(
            parse_line("25.11.26 18:02:11;CALL;0;11;4930123456;015123456789;SIP0;"),
            Ok(CallEvent::Outgoing { call_ref: "fritz:0".into(), number: "015123456789".into() })
        );
        assert_eq!(
            parse_line("25.11.26 18:02:12;RING;1;030555555;4930123456;SIP0;\r\n"),
            Ok(CallEvent::Incoming { call_ref: "fritz:1".into(), caller: Some("030555555".into()) })
        );
        assert_eq!(
            parse_line("25.11.26 18:02:12;RING;2;;4930123456;SIP0;"),
            Ok(CallEvent::Incoming { call_ref: "fritz:2".into(), caller: None }),
            "anonymous"
        );
        assert_eq!(
            parse_line("25.11.26 18:02:15;CONNECT;0;11;015123456789;"),
            Ok(CallEvent::Connected { call_ref: "fritz:0".into() })
        );
        assert_eq!(
            parse_line("25.11.26 18:03:40;DISCONNECT;0;85;"),
            Ok(CallEvent::Ended { call_ref: "fritz:0".into() })
        );
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(parse_line(""), Err(ParseError::NoTimestamp));
        assert_eq!(parse_line("hello;CALL;0;1;2;3;"), Err(ParseError::NoTimestamp));
        assert_eq!(parse_line("25.11.26 18:02:11;CALL;0;11;"), Err(ParseError::Truncated("CALL")));
        assert_eq!(
            parse_line("25.11.26 18:02:11;CALL;x;11;1;2;"),
            Err(ParseError::BadConnectionId("x".into()))
        );
        assert!(matches!(parse_line("25.11.26 18:02:11;HOLD;0;"), Err(ParseError::UnknownEvent(_))));
        assert_eq!(parse_line("ÿÿ.11.26 18:02:11;CALL;0;1;2;3;"), Err(ParseError::NoTimestamp));
    }
}
