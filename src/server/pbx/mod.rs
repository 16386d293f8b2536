//! Placing phone calls through the office's PBX (click-to-call): the server asks the PBX to
//! ring the caller's own phone and, once it is picked up, to dial the target; it follows the
//! call and reports its stages. The hub sends the data-session initiation only once the
//! target answered the phone.
//!
//! One trait, [`Pbx`]; connectors: Asterisk AMI ([`ami`]).

pub mod ami;
pub mod esl;

use crate::protocol::{CallFailure, CallStage};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a verification call rings before the PBX gives up (ms).
pub const VERIFY_RING_MS: u64 = 30_000;

/// What happens to a placed call, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallUpdate {
    Stage(CallStage),
    /// The call did not come about (final).
    Failed(CallFailure),
    /// The call ended after it was answered, or was cancelled (final).
    HungUp,
}

/// A call being placed: its id on the PBX, and its updates.
pub struct PlacedCall {
    pub id: String,
    pub updates: mpsc::UnboundedReceiver<CallUpdate>,
}

/// Whether the connector can place calls now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PbxHealth {
    Connecting,
    Ready,
    /// Why not (a refused login, an unreachable PBX), for `/healthz` and the log.
    Down(String),
}

pub trait Pbx: Send + Sync {
    /// Rings the phone on `extension`; once picked up, dials `number` (E.164 or as the dial
    /// plan wants it), showing `caller_id` to the target.
    fn originate(&self, extension: &str, number: &str, caller_id: &str) -> Result<PlacedCall, CallFailure>;
    /// Rings `number` (E.164) from `caller_id` for a while and hangs up (a verification
    /// call: the caller ID carries the code). The call's id, for [`Pbx::hangup`].
    fn ring(&self, number: &str, caller_id: &str) -> Result<String, CallFailure>;
    /// Hangs a placed call up (cancel before the answer, or end it).
    fn hangup(&self, call_id: &str);
    fn health(&self) -> PbxHealth;
    /// Asks the PBX whether it has a phone with this extension; the answer comes on the
    /// returned channel (dropped unanswered: it cannot tell).
    fn check_extension(&self, extension: &str) -> tokio::sync::oneshot::Receiver<bool>;
}

/// What the server asks of a connector's connection task.
enum Cmd {
    Originate {
        id: String,
        ext: String,
        number: String,
        caller_id: String,
        updates: mpsc::UnboundedSender<CallUpdate>,
    },
    Hangup {
        id: String,
    },
    /// A verification call: ring `number` showing `caller_id`.
    Ring {
        id: String,
        number: String,
        caller_id: String,
    },
    /// Does the PBX know this extension?
    Check {
        ext: String,
        reply: tokio::sync::oneshot::Sender<bool>,
    },
}

/// One call being followed.
#[derive(Default)]
struct Tracked {
    updates: Option<mpsc::UnboundedSender<CallUpdate>>,
    dialing: bool,
    answered: bool,
    /// The caller's channel (AMI: `PJSIP/201-00000001`), once an event named it.
    channel: Option<String>,
    /// Hung up from here before its channel was known: hang it up when it is.
    cancelled: bool,
}

impl Tracked {
    fn send(&self, u: CallUpdate) {
        if let Some(tx) = &self.updates {
            let _ = tx.send(u);
        }
    }
}

/// How one connection to the PBX ended.
enum End {
    /// The server is gone (nobody holds the connector).
    Stopped,
    LoginRefused(String),
    Lost(String),
}

type Session<'a> = Pin<Box<dyn Future<Output = End> + Send + 'a>>;

/// A connection to a PBX: reads buffered, writes straight.
type Link = (tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>, tokio::net::tcp::OwnedWriteHalf);

/// Connects to `what` (for messages) at `addr`, within 5 s.
async fn connect(addr: &str, what: &str, health: &Mutex<PbxHealth>) -> Result<Link, End> {
    *health.lock() = PbxHealth::Connecting;
    match tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(s)) => {
            let (read, write) = s.into_split();
            Ok((tokio::io::BufReader::new(read), write))
        }
        Ok(Err(e)) => Err(End::Lost(format!("cannot reach {what} at {addr}: {e}"))),
        Err(_) => Err(End::Lost(format!("no answer from {what} at {addr} in 5 s"))),
    }
}

/// Runs a connector's connections one after another: reconnects with backoff (a refused login
/// every minute), keeps its health for `/healthz`, fails calls it can no longer follow, and
/// refuses new ones at once while disconnected.
async fn supervise<F>(
    addr: &str,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
    health: Arc<Mutex<PbxHealth>>,
    mut session: F,
) where
    F: for<'a> FnMut(
        &'a mut mpsc::UnboundedReceiver<Cmd>,
        &'a Mutex<PbxHealth>,
        &'a mut HashMap<String, Tracked>,
        &'a mut u32,
    ) -> Session<'a>,
{
    let mut calls: HashMap<String, Tracked> = HashMap::new();
    let mut attempt = 0u32;
    loop {
        let end = session(&mut rx, &health, &mut calls, &mut attempt).await;
        // Calls not yet answered cannot be followed any more: they fail cleanly. Answered
        // ones go on on the phones; their data sessions are not touched.
        for (_, t) in calls.drain() {
            if !t.answered {
                t.send(CallUpdate::Failed(CallFailure::PbxUnavailable));
            }
        }
        let wait = match end {
            End::Stopped => return,
            End::LoginRefused(why) => {
                let text = format!("the PBX at {addr} refused the login: {why} (check the user and secret)");
                tracing::error!("{text}");
                *health.lock() = PbxHealth::Down(text);
                Duration::from_secs(60)
            }
            End::Lost(why) => {
                tracing::warn!("PBX connection: {why}");
                *health.lock() = PbxHealth::Down(why);
                let exp = attempt.min(6);
                attempt = attempt.saturating_add(1);
                Duration::from_millis(250 << exp)
            }
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                cmd = rx.recv() => match cmd {
                    None => return,
                    Some(Cmd::Originate { updates, .. }) => {
                        let _ = updates.send(CallUpdate::Failed(CallFailure::PbxUnavailable));
                    }
                    Some(Cmd::Hangup { .. } | Cmd::Check { .. } | Cmd::Ring { .. }) => {}
                },
            }
        }
    }
}

/// The handle the hub holds: commands to the connection task, and its health.
struct Connector {
    tx: mpsc::UnboundedSender<Cmd>,
    health: Arc<Mutex<PbxHealth>>,
}

impl Pbx for Connector {
    fn originate(&self, extension: &str, number: &str, caller_id: &str) -> Result<PlacedCall, CallFailure> {
        if *self.health.lock() != PbxHealth::Ready {
            return Err(CallFailure::PbxUnavailable);
        }
        let id = uuid_like();
        let (updates, rx) = mpsc::unbounded_channel();
        let cmd = Cmd::Originate {
            id: id.clone(),
            ext: extension.to_string(),
            number: number.to_string(),
            caller_id: caller_id.to_string(),
            updates,
        };
        self.tx.send(cmd).map_err(|_| CallFailure::PbxUnavailable)?;
        Ok(PlacedCall { id, updates: rx })
    }

    fn ring(&self, number: &str, caller_id: &str) -> Result<String, CallFailure> {
        if *self.health.lock() != PbxHealth::Ready {
            return Err(CallFailure::PbxUnavailable);
        }
        let id = uuid_like();
        let cmd = Cmd::Ring { id: id.clone(), number: number.to_string(), caller_id: caller_id.to_string() };
        self.tx.send(cmd).map_err(|_| CallFailure::PbxUnavailable)?;
        Ok(id)
    }

    fn hangup(&self, call_id: &str) {
        let _ = self.tx.send(Cmd::Hangup { id: call_id.to_string() });
    }

    fn check_extension(&self, extension: &str) -> tokio::sync::oneshot::Receiver<bool> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        if *self.health.lock() == PbxHealth::Ready {
            let _ = self.tx.send(Cmd::Check { ext: extension.to_string(), reply });
        }
        rx
    }

    fn health(&self) -> PbxHealth {
        self.health.lock().clone()
    }
}

/// A random id in UUID form (FreeSWITCH wants one for `origination_uuid`; Asterisk takes any).
fn uuid_like() -> String {
    let h = crate::server::auth::new_session_id(); // 32 hex digits
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// How the server reaches its PBX (`--pbx ami://USER:SECRET@HOST:5038`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PbxConfig {
    Ami(ami::AmiConfig),
    Esl(esl::EslConfig),
}

#[derive(Debug, thiserror::Error)]
pub enum PbxConfigError {
    #[error(
        "cannot read the PBX address {0:?}: use ami://USER:SECRET@HOST:5038 or esl://:PASSWORD@HOST:8021"
    )]
    BadUrl(String),
    #[error("unsupported PBX {0:?}: use ami://USER:SECRET@HOST:5038 or esl://:PASSWORD@HOST:8021")]
    Scheme(String),
}

impl PbxConfig {
    /// `ami://USER:SECRET@HOST[:5038][?context=CTX]`.
    pub fn parse(url: &str) -> Result<PbxConfig, PbxConfigError> {
        let u = url::Url::parse(url).map_err(|_| PbxConfigError::BadUrl(url.to_string()))?;
        match u.scheme() {
            "ami" => {
                let host = u.host_str().ok_or_else(|| PbxConfigError::BadUrl(url.to_string()))?;
                let decode = |s: &str| {
                    url::form_urlencoded::parse(format!("x={s}").as_bytes())
                        .next()
                        .map(|(_, v)| v.into_owned())
                        .unwrap_or_default()
                };
                let context = u
                    .query_pairs()
                    .find(|(k, _)| k == "context")
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_else(|| "from-internal".into());
                let channel = u
                    .query_pairs()
                    .find(|(k, _)| k == "channel")
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_else(|| "PJSIP/{ext}".into());
                let trunk = u
                    .query_pairs()
                    .find(|(k, _)| k == "trunk")
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_else(|| "Local/{number}@{context}".into());
                Ok(PbxConfig::Ami(ami::AmiConfig {
                    trunk,
                    addr: format!("{host}:{}", u.port().unwrap_or(5038)),
                    username: decode(u.username()),
                    secret: decode(u.password().unwrap_or("")),
                    context,
                    channel,
                }))
            }
            "esl" => {
                let host = u.host_str().ok_or_else(|| PbxConfigError::BadUrl(url.to_string()))?;
                let query = |k: &str, default: &str| {
                    u.query_pairs()
                        .find(|(q, _)| q == k)
                        .map(|(_, v)| v.into_owned())
                        .unwrap_or_else(|| default.into())
                };
                let password =
                    url::form_urlencoded::parse(format!("x={}", u.password().unwrap_or("")).as_bytes())
                        .next()
                        .map(|(_, v)| v.into_owned())
                        .unwrap_or_default();
                Ok(PbxConfig::Esl(esl::EslConfig {
                    addr: format!("{host}:{}", u.port().unwrap_or(8021)),
                    password,
                    caller: query("caller", "user/{ext}"),
                    trunk: query("trunk", "loopback/{number}/{context}"),
                    context: query("context", "default"),
                }))
            }
            other => Err(PbxConfigError::Scheme(other.to_string())),
        }
    }

    /// Starts the connector (it connects, and reconnects, in the background).
    pub fn start(&self) -> Arc<dyn Pbx> {
        let (tx, rx) = mpsc::unbounded_channel();
        let health = Arc::new(Mutex::new(PbxHealth::Connecting));
        match self {
            PbxConfig::Ami(cfg) => {
                tokio::spawn(ami::run(cfg.clone(), rx, health.clone()));
            }
            PbxConfig::Esl(cfg) => {
                tokio::spawn(esl::run(cfg.clone(), rx, health.clone()));
            }
        }
        Arc::new(Connector { tx, health })
    }
}

/// An extension as a user may set it: 1–32 of digits, letters, `*#+_-`.
pub fn valid_extension(ext: &str) -> bool {
    (1..=32).contains(&ext.len()) && ext.chars().all(|c| c.is_ascii_alphanumeric() || "*#+_-".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pbx_urls() {
        let PbxConfig::Ami(a) =
            PbxConfig::parse("ami://sidecall:s%40cret@pbx.local?context=office").expect("url")
        else {
            panic!("ami")
        };
        assert_eq!(
            (a.addr.as_str(), a.username.as_str(), a.secret.as_str()),
            ("pbx.local:5038", "sidecall", "s@cret")
        );
        assert_eq!(a.context, "office");
        let PbxConfig::Esl(e) = PbxConfig::parse("esl://:ClueCon@fs.local?context=office").expect("url")
        else {
            panic!("esl")
        };
        assert_eq!(
            (e.addr.as_str(), e.password.as_str(), e.caller.as_str()),
            ("fs.local:8021", "ClueCon", "user/{ext}")
        );
        assert!(PbxConfig::parse("sip://x").is_err());
        assert!(PbxConfig::parse("nonsense").is_err());
        assert!(
            valid_extension("201")
                && valid_extension("*97")
                && !valid_extension("")
                && !valid_extension("2 1")
        );
    }
}
