//! Call watchers: the phone call itself starts the session. Each watcher turns what the IAD
//! (router, ATA, PBX) or the desk phone reports into typed [`CallEvent`]s, keeps itself
//! connected, and reports its [`WatcherStatus`].

pub mod action_url;
pub mod ami;
pub mod fritz;
pub mod linked;
pub mod tel;
pub mod tr064;

use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::sync::mpsc;

/// Where a call event came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Fritz,
    Ami,
    Phone,
    Tel,
}

impl Source {
    pub fn label(self) -> &'static str {
        match self {
            Source::Fritz => "FRITZ!Box call monitor",
            Source::Ami => "Asterisk (AMI)",
            Source::Phone => "Desk phone action URLs",
            Source::Tel => "tel: links",
        }
    }
}

/// What happened to a phone call. `call_ref` ties a call's events together.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum CallEvent {
    /// This user dialed `number` (as dialed: local, national or international).
    Outgoing {
        call_ref: String,
        number: String,
    },
    /// Someone calls this user (`None`: anonymous).
    Incoming {
        call_ref: String,
        caller: Option<String>,
    },
    Connected {
        call_ref: String,
    },
    Ended {
        call_ref: String,
    },
}

impl CallEvent {
    pub fn call_ref(&self) -> &str {
        match self {
            CallEvent::Outgoing { call_ref, .. }
            | CallEvent::Incoming { call_ref, .. }
            | CallEvent::Connected { call_ref }
            | CallEvent::Ended { call_ref } => call_ref,
        }
    }
}

/// How a watcher is doing, for the settings window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum WatcherStatus {
    Connecting,
    Connected,
    /// Lost or refused; trying again in `retry_in_ms`.
    Retrying {
        reason: String,
        retry_in_ms: u64,
    },
    /// Stopped for good until the settings change (e.g. wrong AMI password).
    Failed {
        reason: String,
    },
    /// Listening for requests (action URLs, tel: links).
    Listening {
        at: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatcherEvent {
    Call(Source, CallEvent),
    Status(Source, WatcherStatus),
}

/// Sends watcher events; a closed receiver means the watcher should stop.
#[derive(Clone)]
pub struct Emitter {
    source: Source,
    tx: mpsc::UnboundedSender<WatcherEvent>,
}

impl Emitter {
    pub fn new(source: Source, tx: mpsc::UnboundedSender<WatcherEvent>) -> Self {
        Emitter { source, tx }
    }

    pub fn call(&self, ev: CallEvent) -> bool {
        tracing::info!(source = ?self.source, ?ev, "call event");
        self.tx.send(WatcherEvent::Call(self.source, ev)).is_ok()
    }

    pub fn status(&self, st: WatcherStatus) -> bool {
        self.tx.send(WatcherEvent::Status(self.source, st)).is_ok()
    }

    pub fn closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Why a watcher's connection ended; [`WatchError::is_permanent`] decides between trying
/// again and stopping until the settings change.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot connect to {addr}: {source}{hint}")]
    Connect {
        addr: String,
        source: std::io::Error,
        /// What to check, for this kind of device.
        hint: &'static str,
    },
    #[error("connection lost: {0}")]
    Lost(std::io::Error),
    #[error("{0} closed the connection")]
    Closed(&'static str),
    /// The port answers, but not as the settings say it should.
    #[error("{addr} is not an Asterisk manager port (said {said:?})")]
    WrongService { addr: String, said: String },
    /// Retrying would only lock the account.
    #[error("AMI login failed: {0}. Check the user name and secret in manager.conf")]
    LoginRefused(String),
    #[error("no answer in {0} s")]
    Timeout(u64),
    /// Nobody listens to the watcher's events any more.
    #[error("stopped")]
    Stopped,
}

impl WatchError {
    /// Whether trying again cannot help (until the settings change).
    pub fn is_permanent(&self) -> bool {
        matches!(self, WatchError::WrongService { .. } | WatchError::LoginRefused(_))
    }
}

/// Reconnect delays: 1 s doubling to a minute.
pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.min(6)).min(Duration::from_secs(60))
}

/// Longest line or message a watcher reads before discarding it as garbage.
pub(crate) const MAX_LINE: usize = 4096;

/// Connects with TCP keepalive, so a box that vanishes silently is noticed.
pub(crate) async fn connect_keepalive(addr: &str) -> std::io::Result<tokio::net::TcpStream> {
    let stream = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in 5 s"))??;
    let ka = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10));
    if let Err(e) = socket2::SockRef::from(&stream).set_tcp_keepalive(&ka) {
        tracing::debug!("cannot set TCP keepalive: {e}");
    }
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Reads one `\n`-terminated line of at most [`MAX_LINE`] bytes. `Ok(None)`: the peer closed.
/// An overlong line is skipped whole and reported as `Err(InvalidData)`.
pub(crate) async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<String>> {
    use tokio::io::AsyncBufReadExt;
    buf.clear();
    let mut overlong = false;
    loop {
        let available = r.fill_buf().await?;
        if available.is_empty() {
            return Ok(if buf.is_empty() && !overlong {
                None
            } else {
                Some(String::from_utf8_lossy(buf).into_owned())
            });
        }
        match available.iter().position(|b| *b == b'\n') {
            Some(i) => {
                if !overlong {
                    buf.extend_from_slice(&available[..i]);
                }
                r.consume(i + 1);
                if overlong || buf.len() > MAX_LINE {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "overlong line skipped",
                    ));
                }
                if buf.last() == Some(&b'\r') {
                    buf.pop();
                }
                // Mixed encodings (Latin-1 names from old boxes) must not stop the watcher.
                return Ok(Some(String::from_utf8_lossy(buf).into_owned()));
            }
            None => {
                let n = available.len();
                if !overlong {
                    buf.extend_from_slice(available);
                    if buf.len() > MAX_LINE {
                        overlong = true;
                        buf.clear();
                    }
                }
                r.consume(n);
            }
        }
    }
}
