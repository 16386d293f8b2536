//! The client core: one task that keeps the WebSocket to the server alive, tracks the state of
//! every request and session, and talks to its owner (CLI or UI) over typed channels.

use crate::client::api;
use crate::protocol::{
    ClientMsg, ClosedReason, EndReason, ErrorCode, IceServer, MAX_MESSAGE_BYTES, Offer, Outcome,
    PROTOCOL_VERSION, Party, PeerInfo, Role, ServerMsg, SessionId, Settings, SettingsChange, SignalData,
    close_code,
};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Called after every event, e.g. `egui::Context::request_repaint`.
pub type Waker = Arc<dyn Fn() + Send + Sync>;

#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Server base URL, e.g. `http://192.168.1.10:7480`.
    pub server: String,
    pub token: String,
    /// This device's own address, told to the peer after accept.
    pub device_ip: Option<IpAddr>,
    /// First reconnect delay; doubles up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Which certificates an `https://` server may present.
    pub trust: super::tls::Trust,
}

impl ClientConfig {
    pub fn new(server: impl Into<String>, token: impl Into<String>) -> Self {
        ClientConfig {
            server: server.into(),
            token: token.into(),
            device_ip: None,
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            trust: super::tls::Trust::System,
        }
    }
}

/// Why something stopped: an initiation stopped ringing or a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    AnsweredElsewhere,
    DeclinedElsewhere,
    Cancelled,
    TimedOut,
    CallerGone,
    YouEnded,
    PeerEnded,
    PeerDisconnected,
    ServerShutdown,
    /// The phone call it was placed with ended.
    CallEnded,
    /// This client lost its connection to the server.
    ConnectionLost,
    /// A server node the session ran through stopped.
    NodeLost,
}

impl From<ClosedReason> for StopReason {
    fn from(r: ClosedReason) -> Self {
        match r {
            ClosedReason::AnsweredElsewhere => StopReason::AnsweredElsewhere,
            ClosedReason::DeclinedElsewhere => StopReason::DeclinedElsewhere,
            ClosedReason::Cancelled => StopReason::Cancelled,
            ClosedReason::TimedOut => StopReason::TimedOut,
            ClosedReason::CallerGone => StopReason::CallerGone,
            ClosedReason::NodeLost => StopReason::NodeLost,
        }
    }
}

impl From<EndReason> for StopReason {
    fn from(r: EndReason) -> Self {
        match r {
            EndReason::YouEnded => StopReason::YouEnded,
            EndReason::PeerEnded => StopReason::PeerEnded,
            EndReason::PeerDisconnected => StopReason::PeerDisconnected,
            EndReason::ServerShutdown => StopReason::ServerShutdown,
            EndReason::CallEnded => StopReason::CallEnded,
            EndReason::NodeLost => StopReason::NodeLost,
        }
    }
}

/// What the core reports to its owner.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Connecting {
        attempt: u32,
    },
    Online {
        account: Party,
        device_id: i64,
        settings: Settings,
        observed_ip: IpAddr,
        answer_timeout_secs: u64,
        ice_servers: Vec<IceServer>,
        /// The server can place phone calls ([`ClientHandle::call`]).
        can_place_calls: bool,
        /// This user's extension on the server's PBX.
        extension: Option<String>,
    },
    /// This user's extension as the server stored it.
    Extension {
        extension: Option<String>,
    },
    /// Click-to-call: how far the phone call of request `req_id` has come.
    CallProgress {
        req_id: u64,
        session_id: SessionId,
        stage: crate::protocol::CallStage,
    },
    /// The connection is down; the core retries after `retry_in_ms`.
    Offline {
        reason: String,
        retry_in_ms: u64,
    },
    /// The server refused this login for good (token revoked, device replaced, version):
    /// the core has stopped; log in again.
    LoggedOut {
        reason: String,
    },
    /// Someone asks for a data session.
    Incoming {
        session_id: SessionId,
        caller: Party,
        offer: Offer,
        expires_in_ms: u64,
        /// The phone call this accompanies, as the caller's watcher named it.
        #[serde(skip_serializing_if = "Option::is_none")]
        call_ref: Option<String>,
    },
    /// An incoming request stopped ringing without this device answering it.
    IncomingClosed {
        session_id: SessionId,
        reason: StopReason,
    },
    /// An outgoing request is ringing at the callee.
    DialPending {
        req_id: u64,
        session_id: SessionId,
    },
    /// An outgoing request has its answer.
    DialResult {
        req_id: u64,
        session_id: Option<SessionId>,
        outcome: Outcome,
    },
    /// An outgoing request could not be made (offline, own number, rate limit, lost connection).
    DialFailed {
        req_id: u64,
        code: Option<ErrorCode>,
        message: String,
    },
    SessionStarted {
        session_id: SessionId,
        role: Role,
        offer: Offer,
        peer: PeerInfo,
        /// Through the server's relay only; `peer` has no address.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        relayed: bool,
    },
    Signal {
        session_id: SessionId,
        data: SignalData,
    },
    /// Fresh ICE servers (relay credentials renewed); used from the next session on.
    IceServers {
        ice_servers: Vec<IceServer>,
    },
    SessionEnded {
        session_id: SessionId,
        reason: StopReason,
    },
    Settings {
        settings: Settings,
    },
    /// The block list as the server keeps it (E.164).
    Blocked {
        numbers: Vec<String>,
    },
    /// The server refused something; `message` is for people.
    Error {
        code: ErrorCode,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        session_id: Option<SessionId>,
    },
    /// The core has stopped (after `shutdown` or `logged_out`).
    Stopped,
}

/// What the owner asks of the core.
#[derive(Clone, Debug)]
pub enum Command {
    Dial {
        req_id: u64,
        target: String,
        offer: Offer,
        region: Option<String>,
        call_ref: Option<String>,
        place_call: bool,
    },
    SetExtension {
        extension: Option<String>,
    },
    Answer {
        session_id: SessionId,
        accept: bool,
    },
    End {
        session_id: SessionId,
    },
    Signal {
        session_id: SessionId,
        data: SignalData,
    },
    UpdateSettings(SettingsChange),
    SetBlocked {
        numbers: Vec<String>,
    },
    Shutdown,
}

/// Cheap to clone; every method returns at once.
#[derive(Clone)]
pub struct ClientHandle {
    tx: mpsc::UnboundedSender<Command>,
    next_req: Arc<AtomicU64>,
}

impl ClientHandle {
    fn send(&self, cmd: Command) {
        // A closed channel means the core stopped; it already said so with `Stopped`.
        let _ = self.tx.send(cmd);
    }

    /// Asks for a session with `target`; returns the request id its events carry.
    pub fn dial(&self, target: &str, offer: Offer) -> u64 {
        self.dial_with(target, offer, None, None)
    }

    pub fn dial_with(
        &self,
        target: &str,
        offer: Offer,
        region: Option<String>,
        call_ref: Option<String>,
    ) -> u64 {
        let req_id = self.next_req.fetch_add(1, Ordering::Relaxed);
        self.dial_as(req_id, target, offer, region, call_ref);
        req_id
    }

    /// [`Self::dial_with`] with the request id chosen by the caller (who then makes every
    /// request of this handle this way, so that ids stay unique).
    pub fn dial_as(
        &self,
        req_id: u64,
        target: &str,
        offer: Offer,
        region: Option<String>,
        call_ref: Option<String>,
    ) {
        self.dial_full(req_id, target, offer, region, call_ref, false);
    }

    /// [`Self::dial_as`], or with `place_call` [`Self::call`], with the request id chosen by
    /// the caller.
    pub fn dial_full(
        &self,
        req_id: u64,
        target: &str,
        offer: Offer,
        region: Option<String>,
        call_ref: Option<String>,
        place_call: bool,
    ) {
        self.send(Command::Dial { req_id, target: target.to_string(), offer, region, call_ref, place_call });
    }

    /// Click-to-call: the server places the phone call through its PBX, then rings the data
    /// session once the target answered. Progress comes as [`Event::CallProgress`].
    pub fn call(&self, target: &str, offer: Offer, region: Option<String>) -> u64 {
        let req_id = self.next_req.fetch_add(1, Ordering::Relaxed);
        self.dial_full(req_id, target, offer, region, None, true);
        req_id
    }

    /// Sets (or clears) this user's extension on the server's PBX.
    pub fn set_extension(&self, extension: Option<String>) {
        self.send(Command::SetExtension { extension });
    }

    pub fn answer(&self, session_id: &SessionId, accept: bool) {
        self.send(Command::Answer { session_id: session_id.clone(), accept });
    }

    /// Cancels a ringing outgoing request, declines an incoming one, or hangs up.
    pub fn end(&self, session_id: &SessionId) {
        self.send(Command::End { session_id: session_id.clone() });
    }

    pub fn signal(&self, session_id: &SessionId, data: SignalData) {
        self.send(Command::Signal { session_id: session_id.clone(), data });
    }

    pub fn update_settings(&self, accepting_sessions: Option<bool>, do_not_disturb: Option<bool>) {
        self.change_settings(SettingsChange { accepting_sessions, do_not_disturb, hide_address: None });
    }

    /// Changes the settings the server keeps (each field given; `None` asks for them).
    pub fn change_settings(&self, change: SettingsChange) {
        self.send(Command::UpdateSettings(change));
    }

    /// Replaces the block list (any common number format).
    pub fn set_blocked(&self, numbers: Vec<String>) {
        self.send(Command::SetBlocked { numbers });
    }

    pub fn shutdown(&self) {
        self.send(Command::Shutdown);
    }
}

struct Sink {
    tx: mpsc::UnboundedSender<Event>,
    wake: Option<Waker>,
}

impl Sink {
    fn emit(&self, event: Event) {
        let _ = self.tx.send(event);
        if let Some(w) = &self.wake {
            w();
        }
    }
}

/// Starts the core on the current tokio runtime.
pub fn spawn(cfg: ClientConfig, wake: Option<Waker>) -> (ClientHandle, mpsc::UnboundedReceiver<Event>) {
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let sink = Sink { tx: ev_tx, wake };
    tokio::spawn(run(cfg, cmd_rx, sink));
    (ClientHandle { tx: cmd_tx, next_req: Arc::new(AtomicU64::new(1)) }, ev_rx)
}

/// What this device has going on, as far as the server told it.
#[derive(Default)]
struct State {
    /// Outgoing requests without an answer yet.
    dials: HashSet<u64>,
    /// Outgoing requests that are ringing: session → request.
    ringing_out: HashMap<SessionId, u64>,
    /// Incoming requests ringing here.
    ringing_in: HashSet<SessionId>,
    /// Accepted sessions, and our role in each. They outlive the server connection: the
    /// peers' own connection carries on, and the session is resumed after reconnecting.
    active: HashMap<SessionId, (Role, String)>,
}

impl State {
    /// The connection is gone: the server forgets everything this device had going on.
    fn connection_lost(&mut self, sink: &Sink) {
        let mut dials: Vec<u64> = self.dials.drain().collect();
        dials.sort_unstable();
        for req_id in dials {
            sink.emit(Event::DialFailed {
                req_id,
                code: None,
                message: "the connection to the server was lost".into(),
            });
        }
        self.ringing_out.clear();
        for session_id in self.ringing_in.drain() {
            sink.emit(Event::IncomingClosed { session_id, reason: StopReason::ConnectionLost });
        }
        // Active sessions stay: see `resume_messages`.
    }

    /// What to tell a server after (re)connecting: the sessions still running here.
    fn resume_messages(&self) -> Vec<ClientMsg> {
        let mut ids: Vec<_> = self.active.iter().collect();
        ids.sort_by_key(|(id, _)| *id);
        ids.into_iter()
            .map(|(id, (role, peer))| ClientMsg::Resume {
                session_id: id.clone(),
                role: *role,
                peer: peer.clone(),
            })
            .collect()
    }

    /// A session ended here while the server could not be told (offline).
    fn ended_offline(&mut self, session_id: SessionId, sink: &Sink) {
        if self.active.remove(&session_id).is_some() {
            sink.emit(Event::SessionEnded { session_id, reason: StopReason::YouEnded });
        }
    }

    /// Updates the state for a server message and turns it into an event.
    fn on_server(&mut self, msg: ServerMsg) -> Option<Event> {
        Some(match msg {
            ServerMsg::AccessPending { req_id, session_id } => {
                self.ringing_out.insert(session_id.clone(), req_id);
                Event::DialPending { req_id, session_id }
            }
            ServerMsg::AccessOutcome { req_id, session_id, outcome } => {
                self.dials.remove(&req_id);
                if let Some(id) = &session_id {
                    self.ringing_out.remove(id);
                }
                Event::DialResult { req_id, session_id, outcome }
            }
            ServerMsg::Initiation { session_id, caller, offer, expires_in_ms, call_ref } => {
                self.ringing_in.insert(session_id.clone());
                Event::Incoming { session_id, caller, offer, expires_in_ms, call_ref }
            }
            ServerMsg::InitiationClosed { session_id, reason } => {
                self.ringing_in.remove(&session_id);
                Event::IncomingClosed { session_id, reason: reason.into() }
            }
            ServerMsg::SessionStarted { session_id, role, offer, peer, relayed } => {
                self.ringing_in.remove(&session_id);
                self.active.insert(session_id.clone(), (role, peer.number.clone()));
                Event::SessionStarted { session_id, role, offer, peer, relayed }
            }
            ServerMsg::Signal { session_id, data } => Event::Signal { session_id, data },
            ServerMsg::IceServers { ice_servers } => Event::IceServers { ice_servers },
            ServerMsg::SessionEnded { session_id, reason } => {
                self.active.remove(&session_id);
                Event::SessionEnded { session_id, reason: reason.into() }
            }
            ServerMsg::Settings { settings } => Event::Settings { settings },
            ServerMsg::Extension { extension } => Event::Extension { extension },
            ServerMsg::CallProgress { req_id, session_id, stage } => {
                // The session id is known now: the caller can cancel (hang the call up).
                self.ringing_out.insert(session_id.clone(), req_id);
                Event::CallProgress { req_id, session_id, stage }
            }
            ServerMsg::Blocked { numbers } => Event::Blocked { numbers },
            ServerMsg::Error { code, message, req_id: Some(req_id), .. } if self.dials.remove(&req_id) => {
                Event::DialFailed { req_id, code: Some(code), message }
            }
            ServerMsg::Error { code, message, session_id, .. } => {
                if let Some(id) = &session_id
                    && matches!(code, ErrorCode::SessionClosed | ErrorCode::UnknownSession)
                {
                    // The server no longer knows it: stop showing it.
                    self.ringing_in.remove(id);
                    if self.active.remove(id).is_some() {
                        // A session the server forgot (it restarted and the other side
                        // never claimed it, or our `end` reached a server that did not
                        // know it): over.
                        return Some(Event::SessionEnded {
                            session_id: id.clone(),
                            reason: StopReason::PeerDisconnected,
                        });
                    }
                }
                Event::Error { code, message, session_id }
            }
            ServerMsg::Pong { .. } => return None,
            ServerMsg::Welcome { .. } => return None,
        })
    }
}

/// How one connection attempt ended.
enum Exit {
    Shutdown,
    /// Do not reconnect.
    Fatal(String),
    Lost {
        reason: String,
        was_online: bool,
    },
}

async fn run(cfg: ClientConfig, mut cmds: mpsc::UnboundedReceiver<Command>, sink: Sink) {
    let mut state = State::default();
    let mut attempt: u32 = 0;
    loop {
        attempt = attempt.saturating_add(1);
        sink.emit(Event::Connecting { attempt });
        let exit = connect_and_serve(&cfg, &mut cmds, &sink, &mut state).await;
        state.connection_lost(&sink);
        let reason = match exit {
            Exit::Shutdown => break,
            Exit::Fatal(reason) => {
                tracing::warn!("logged out: {reason}");
                sink.emit(Event::LoggedOut { reason });
                break;
            }
            Exit::Lost { reason, was_online } => {
                if was_online {
                    attempt = 1;
                }
                reason
            }
        };
        let delay = backoff(&cfg, attempt);
        tracing::info!("offline: {reason}; retrying in {} ms", delay.as_millis());
        sink.emit(Event::Offline { reason, retry_in_ms: delay.as_millis() as u64 });
        let wake_at = tokio::time::Instant::now() + delay;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(wake_at) => break,
                cmd = cmds.recv() => match cmd {
                    None | Some(Command::Shutdown) => {
                        sink.emit(Event::Stopped);
                        return;
                    }
                    Some(Command::End { session_id }) => state.ended_offline(session_id, &sink),
                    Some(cmd) => refuse_offline(cmd, &sink),
                },
            }
        }
    }
    sink.emit(Event::Stopped);
}

fn backoff(cfg: &ClientConfig, attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(16);
    let base = cfg.backoff_min.saturating_mul(1u32 << exp).min(cfg.backoff_max);
    // ±20 % jitter so that many clients do not reconnect in step after a server restart.
    let jitter = 0.8 + rand::random::<f64>() * 0.4;
    base.mul_f64(jitter)
}

fn refuse_offline(cmd: Command, sink: &Sink) {
    match cmd {
        Command::Dial { req_id, .. } => sink.emit(Event::DialFailed {
            req_id,
            code: None,
            message: "not connected to the server; try again when online".into(),
        }),
        Command::UpdateSettings { .. } | Command::SetBlocked { .. } | Command::SetExtension { .. } => sink
            .emit(Event::Error {
                code: ErrorCode::Internal,
                message: "not connected to the server: settings were not changed".into(),
                session_id: None,
            }),
        // Ringing requests are over when offline; signals wait for nobody (the peers' own
        // connection carries what matters).
        Command::Answer { .. } | Command::End { .. } | Command::Signal { .. } | Command::Shutdown => {}
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn send(ws: &mut Ws, msg: &ClientMsg) -> Result<(), String> {
    let text = serde_json::to_string(msg).map_err(|e| e.to_string())?;
    ws.send(Message::text(text)).await.map_err(|e| format!("send failed: {e}"))
}

fn close_reason(frame: Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> Exit {
    let Some(frame) = frame else {
        return Exit::Lost { reason: "the server closed the connection".into(), was_online: true };
    };
    let code = u16::from(frame.code);
    let text = frame.reason.to_string();
    match code {
        close_code::AUTH_FAILED | close_code::REPLACED | close_code::UNSUPPORTED_VERSION => {
            Exit::Fatal(if text.is_empty() { format!("closed by the server ({code})") } else { text })
        }
        _ => Exit::Lost {
            reason: if text.is_empty() { format!("the server closed the connection ({code})") } else { text },
            was_online: true,
        },
    }
}

async fn connect_and_serve(
    cfg: &ClientConfig,
    cmds: &mut mpsc::UnboundedReceiver<Command>,
    sink: &Sink,
    state: &mut State,
) -> Exit {
    let url = match api::websocket_url(&cfg.server) {
        Ok(u) => u,
        Err(e) => return Exit::Fatal(e.to_string()),
    };
    let ws_cfg = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES))
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0);
    let tls = match super::tls::client_config(&cfg.trust) {
        Ok(c) => tokio_tungstenite::Connector::Rustls(std::sync::Arc::new(c)),
        Err(e) => return Exit::Fatal(format!("cannot set up TLS: {e}")),
    };
    let connect = tokio_tungstenite::connect_async_tls_with_config(&url, Some(ws_cfg), true, Some(tls));
    let mut ws = match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) if cfg.server.starts_with("https://") => {
            // A certificate that changed is not a network hiccup: stop, and say so.
            let why = api::explain_tls_failure(&cfg.server, &cfg.trust, e.to_string()).await;
            return match why {
                api::ApiError::CertificateChanged { .. } | api::ApiError::Untrusted { .. } => {
                    Exit::Fatal(why.to_string())
                }
                _ => Exit::Lost { reason: format!("cannot reach {}: {e}", cfg.server), was_online: false },
            };
        }
        Ok(Err(e)) => {
            return Exit::Lost { reason: format!("cannot reach {}: {e}", cfg.server), was_online: false };
        }
        Err(_) => {
            return Exit::Lost {
                reason: format!("no answer from {} in 10 s", cfg.server),
                was_online: false,
            };
        }
    };
    let hello =
        ClientMsg::Hello { protocol: PROTOCOL_VERSION, token: cfg.token.clone(), device_ip: cfg.device_ip };
    if let Err(reason) = send(&mut ws, &hello).await {
        return Exit::Lost { reason, was_online: false };
    }
    // Wait for the welcome (or the refusal).
    let heartbeat = loop {
        let frame = match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(Some(Err(e))) => {
                return Exit::Lost { reason: format!("connection failed: {e}"), was_online: false };
            }
            Ok(None) => {
                return Exit::Lost { reason: "the server closed the connection".into(), was_online: false };
            }
            Err(_) => {
                return Exit::Lost { reason: "the server did not answer hello".into(), was_online: false };
            }
        };
        match frame {
            Message::Text(text) => match serde_json::from_str::<ServerMsg>(text.as_str()) {
                Ok(ServerMsg::Welcome {
                    account,
                    device_id,
                    settings,
                    heartbeat_secs,
                    answer_timeout_secs,
                    observed_ip,
                    ice_servers,
                    can_place_calls,
                    extension,
                    ..
                }) => {
                    tracing::info!(number = %account.number, device_id, "online");
                    sink.emit(Event::Online {
                        account,
                        device_id,
                        settings,
                        observed_ip,
                        answer_timeout_secs,
                        ice_servers,
                        can_place_calls,
                        extension,
                    });
                    for msg in state.resume_messages() {
                        if let Err(reason) = send(&mut ws, &msg).await {
                            return Exit::Lost { reason, was_online: true };
                        }
                    }
                    break Duration::from_secs(heartbeat_secs.max(1));
                }
                Ok(ServerMsg::Error {
                    code: ErrorCode::AuthFailed | ErrorCode::UnsupportedVersion,
                    message,
                    ..
                }) => {
                    return Exit::Fatal(message);
                }
                Ok(other) => tracing::debug!("before welcome: {other:?}"),
                Err(e) => tracing::warn!("unreadable message from the server: {e}"),
            },
            Message::Close(frame) => {
                return match close_reason(frame) {
                    Exit::Lost { reason, .. } => Exit::Lost { reason, was_online: false },
                    other => other,
                };
            }
            _ => {}
        }
    };
    // Silence for three heartbeats means the server (or the path to it) is gone.
    let silence = heartbeat * 3;
    let mut deadline = tokio::time::Instant::now() + silence;
    loop {
        tokio::select! {
            frame = ws.next() => {
                deadline = tokio::time::Instant::now() + silence;
                match frame {
                    Some(Ok(Message::Text(text))) => match serde_json::from_str::<ServerMsg>(text.as_str()) {
                        Ok(msg) => {
                            if let Some(ev) = state.on_server(msg) {
                                sink.emit(ev);
                            }
                        }
                        Err(e) => tracing::warn!("unreadable message from the server: {e}"),
                    },
                    Some(Ok(Message::Close(frame))) => return close_reason(frame),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Exit::Lost { reason: format!("connection lost: {e}"), was_online: true },
                    None => return Exit::Lost { reason: "connection lost".into(), was_online: true },
                }
            }
            cmd = cmds.recv() => {
                let msg = match cmd {
                    None | Some(Command::Shutdown) => {
                        let _ = ws.close(None).await;
                        return Exit::Shutdown;
                    }
                    Some(Command::Dial { req_id, target, offer, region, call_ref, place_call }) => {
                        state.dials.insert(req_id);
                        ClientMsg::AccessRequest { req_id, target, offer, region, call_ref, place_call }
                    }
                    Some(Command::SetExtension { extension }) => ClientMsg::SetExtension { extension },
                    Some(Command::Answer { session_id, accept }) => ClientMsg::Answer { session_id, accept },
                    Some(Command::End { session_id }) => ClientMsg::End { session_id },
                    Some(Command::Signal { session_id, data }) => ClientMsg::Signal { session_id, data },
                    Some(Command::UpdateSettings(c)) => ClientMsg::UpdateSettings {
                        accepting_sessions: c.accepting_sessions,
                        do_not_disturb: c.do_not_disturb,
                        hide_address: c.hide_address,
                    },
                    Some(Command::SetBlocked { numbers }) => ClientMsg::SetBlocked { numbers },
                };
                if let Err(reason) = send(&mut ws, &msg).await {
                    return Exit::Lost { reason, was_online: true };
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                return Exit::Lost { reason: "the server stopped answering".into(), was_online: true };
            }
        }
    }
}
