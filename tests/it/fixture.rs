//! Real server on an ephemeral port, real clients over real sockets.

use futures_util::{SinkExt, StreamExt};
use sidecall::client::{self, ClientConfig, ClientHandle, Event, StopReason, api};
use sidecall::protocol::{
    ClientMsg, ErrorCode, LoginRequest, Offer, Outcome, PROTOCOL_VERSION, Party, PeerInfo, RegisterRequest,
    Role, ServerMsg, SessionId, Settings,
};
use sidecall::server::{self, RunningServer, ServerConfig};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

pub const PASSWORD: &str = "correct horse battery";
/// Numbers of the test users (valid German numbers).
pub const ALICE: &str = "+4930123456";
pub const BOB: &str = "+4915123456789";
pub const CAROL: &str = "+4940123456";

/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub running: Option<RunningServer>,
    /// Holds the database; removed with the server.
    pub _dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub url: String,
    cfg: ServerConfig,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        sidecall::init_logging(&std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into()));
        sidecall::tls::install_default_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = ServerConfig::new("127.0.0.1:0".parse().expect("addr"), dir.path().join("server"));
        cfg.hub.heartbeat = Duration::from_secs(2);
        // Sessions wait this long for a device whose connection dropped.
        cfg.hub.reconnect_grace = Duration::from_secs(2);
        // Tests register many accounts from one address; `hardening` tests the real limits.
        cfg.limits.registrations_per_address = 1000;
        cfg.limits.registrations_global = 1000;
        tweak(&mut cfg);
        let running = server::start(cfg.clone()).await.expect("server starts");
        let addr = running.addr;
        TestServer { url: running.url(), running: Some(running), _dir: dir, addr, cfg }
    }

    /// What clients of this server trust: its own certificate, when it serves TLS.
    pub fn trust(&self) -> sidecall::client::tls::Trust {
        let pin = self.running.as_ref().and_then(|r| r.fingerprint.clone());
        sidecall::client::tls::Trust::from_pin(pin.as_deref())
    }

    pub fn hub(&self) -> &std::sync::Arc<sidecall::server::hub::Hub> {
        &self.running.as_ref().expect("running").hub
    }

    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }

    /// Stops the server and starts it again on the same port and database.
    pub async fn restart(&mut self) {
        self.stop().await;
        let mut cfg = self.cfg.clone();
        cfg.listen = self.addr;
        let running = server::start(cfg).await.expect("server restarts on the same port");
        self.running = Some(running);
    }

    /// Registers `number` and logs one device in; returns the token.
    pub async fn account(&self, number: &str, name: &str) -> String {
        let req = RegisterRequest {
            number: number.into(),
            display_name: name.into(),
            password: PASSWORD.into(),
            region: None,
        };
        api::register(&self.url, &self.trust(), &req).await.expect("register");
        self.login(number, None).await
    }

    /// Logs another device of `number` in; returns its token.
    pub async fn login(&self, number: &str, device_ip: Option<IpAddr>) -> String {
        let req = LoginRequest {
            number: number.into(),
            password: PASSWORD.into(),
            region: None,
            device_ip,
            device_name: Some("test".into()),
        };
        api::login(&self.url, &self.trust(), &req).await.expect("login").token
    }

    /// A connected client core for `token`.
    pub async fn client(&self, token: &str, device_ip: Option<IpAddr>) -> TestClient {
        let mut cfg = ClientConfig::new(self.url.clone(), token);
        cfg.device_ip = device_ip;
        cfg.trust = self.trust();
        cfg.backoff_min = Duration::from_millis(50);
        cfg.backoff_max = Duration::from_millis(500);
        TestClient::online(cfg).await
    }

    /// Registers and connects a user in one go.
    pub async fn user(&self, number: &str, name: &str) -> TestClient {
        let token = self.account(number, name).await;
        self.client(&token, None).await
    }

    pub fn ws_url(&self) -> String {
        api::websocket_url(&self.url).expect("ws url")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            // Best effort: tell clients; the runtime ends with the test anyway.
            r.hub.shutdown();
        }
    }
}

pub struct TestClient {
    pub handle: ClientHandle,
    pub events: mpsc::UnboundedReceiver<Event>,
    pub number: String,
}

impl TestClient {
    /// A client core with `cfg`, once it is online.
    pub async fn online(cfg: ClientConfig) -> TestClient {
        let (handle, events) = client::spawn(cfg, None);
        let mut c = TestClient { handle, events, number: String::new() };
        c.number = c
            .expect("online", |e| match e {
                Event::Online { account, .. } => Some(account.number.clone()),
                _ => None,
            })
            .await;
        c
    }

    /// Skips events until `pick` returns something; fails the test after [`WAIT`].
    pub async fn expect<T>(&mut self, what: &str, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(ev)) => {
                    if let Some(v) = pick(&ev) {
                        return v;
                    }
                    seen.push(ev);
                }
                Ok(None) => panic!("client stopped while waiting for {what}; saw {seen:#?}"),
                Err(_) => panic!("timed out waiting for {what}; saw {seen:#?}"),
            }
        }
    }

    /// The next incoming request: session, caller, offer.
    pub async fn incoming(&mut self) -> (SessionId, Party, Offer) {
        self.expect("incoming", |e| match e {
            Event::Incoming { session_id, caller, offer, .. } => {
                Some((session_id.clone(), caller.clone(), *offer))
            }
            _ => None,
        })
        .await
    }

    /// The outcome of request `req`; fails the test if the request failed instead.
    pub async fn dial_result(&mut self, req: u64) -> Outcome {
        self.expect("dial result", |e| match e {
            Event::DialResult { req_id, outcome, .. } if *req_id == req => Some(outcome.clone()),
            Event::DialFailed { req_id, message, .. } if *req_id == req => panic!("dial failed: {message}"),
            _ => None,
        })
        .await
    }

    pub async fn started(&mut self) -> (SessionId, Role, PeerInfo) {
        self.expect("session started", |e| match e {
            Event::SessionStarted { session_id, role, peer, .. } => {
                Some((session_id.clone(), *role, peer.clone()))
            }
            _ => None,
        })
        .await
    }

    pub async fn ended(&mut self) -> (SessionId, StopReason) {
        self.expect("session ended", |e| match e {
            Event::SessionEnded { session_id, reason } => Some((session_id.clone(), *reason)),
            _ => None,
        })
        .await
    }

    /// Why the incoming request `sid` stopped ringing.
    pub async fn closed(&mut self, sid: &SessionId) -> StopReason {
        self.expect("incoming closed", |e| match e {
            Event::IncomingClosed { session_id, reason } if session_id == sid => Some(*reason),
            _ => None,
        })
        .await
    }

    /// The next error the server reported: code and message.
    pub async fn error(&mut self) -> (ErrorCode, String) {
        self.expect("error", |e| match e {
            Event::Error { code, message, .. } => Some((*code, message.clone())),
            _ => None,
        })
        .await
    }

    /// Waits for the server to confirm settings matching `want`.
    pub async fn settings(&mut self, want: impl Fn(&Settings) -> bool) {
        self.expect("settings", |e| matches!(e, Event::Settings { settings } if want(settings)).then_some(()))
            .await
    }

    /// Everything that arrives within `dur`.
    /// Every event until the next `Online`, which must come within [`WAIT`].
    pub async fn drain_until_online(&mut self) -> Vec<Event> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(e @ Event::Online { .. })) => {
                    seen.push(e);
                    return seen;
                }
                Ok(Some(e)) => seen.push(e),
                Ok(None) | Err(_) => panic!("not online again; saw {seen:?}"),
            }
        }
    }

    pub async fn drain(&mut self, dur: Duration) -> Vec<Event> {
        let deadline = tokio::time::Instant::now() + dur;
        let mut out = Vec::new();
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            out.push(ev);
        }
        out
    }
}

/// An access request for `target` with nothing offered.
pub fn access(req_id: u64, target: &str) -> ClientMsg {
    ClientMsg::AccessRequest {
        req_id,
        target: target.into(),
        offer: Offer::default(),
        region: None,
        call_ref: None,
        place_call: false,
    }
}

/// A bare WebSocket speaking the protocol by hand, for bad input.
pub struct RawWs {
    pub ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    /// Every text frame received, verbatim.
    pub transcript: Vec<String>,
}

/// What a raw socket received next.
#[derive(Debug)]
pub enum Frame {
    Msg(ServerMsg),
    Closed(Option<u16>, String),
}

impl RawWs {
    pub async fn connect(server: &TestServer) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(server.ws_url()).await.expect("ws connect");
        RawWs { ws, transcript: Vec::new() }
    }

    /// Connects and logs in with `token`, consuming the welcome.
    pub async fn login(server: &TestServer, token: &str) -> Self {
        let mut raw = Self::connect(server).await;
        raw.send(&ClientMsg::Hello { protocol: PROTOCOL_VERSION, token: token.into(), device_ip: None })
            .await;
        match raw.next().await {
            Frame::Msg(ServerMsg::Welcome { .. }) => raw,
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    pub async fn send(&mut self, msg: &ClientMsg) {
        let text = serde_json::to_string(msg).expect("json");
        self.send_text(&text).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text.to_string())).await.expect("send");
    }

    pub async fn next(&mut self) -> Frame {
        self.try_next(WAIT).await.expect("a frame in time")
    }

    /// The next frame, or `None` if nothing comes within `wait`.
    pub async fn try_next(&mut self, wait: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + wait;
        Some(loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next()).await.ok()?;
            match frame {
                Some(Ok(Message::Text(t))) => {
                    self.transcript.push(t.to_string());
                    let msg = serde_json::from_str(t.as_str()).expect("server sends valid messages");
                    if matches!(msg, ServerMsg::Blocked { .. }) {
                        continue; // sent after every welcome; not what these tests look at
                    }
                    break Frame::Msg(msg);
                }
                Some(Ok(Message::Close(f))) => {
                    break Frame::Closed(
                        f.as_ref().map(|f| u16::from(f.code)),
                        f.map(|f| f.reason.to_string()).unwrap_or_default(),
                    );
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => break Frame::Closed(None, e.to_string()),
                None => break Frame::Closed(None, String::new()),
            }
        })
    }

    /// The next message, which must be an error; returns its code.
    pub async fn expect_error(&mut self) -> sidecall::protocol::ErrorCode {
        match self.next().await {
            Frame::Msg(ServerMsg::Error { code, .. }) => code,
            other => panic!("expected an error, got {other:?}"),
        }
    }
}

/// The app's core (no window) with its own config folder, settings file and profile.
pub struct TestApp {
    pub core: sidecall::app::AppHandle,
    pub events: std::sync::mpsc::Receiver<sidecall::app::AppEvent>,
    pub _dir: tempfile::TempDir,
}

impl TestApp {
    /// Starts the core of profile `alice` with `settings` (TOML) as its settings file.
    pub fn start(settings: &str) -> TestApp {
        use sidecall::app::{self, AppPaths};
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = AppPaths {
            config_dir: dir.path().join("config"),
            data_dir: dir.path().join("data"),
            profile: "alice".into(),
        };
        std::fs::create_dir_all(paths.config_dir.join("profiles")).expect("dir");
        std::fs::write(paths.config_dir.join("profiles/alice.settings.toml"), settings).expect("settings");
        let (core, events) = app::start_with(paths, std::sync::Arc::new(|| {}), true);
        TestApp { core, events, _dir: dir }
    }

    /// Waits (20 s at most) for a state of the window that `pred` accepts.
    pub fn wait_state(
        &self,
        what: &str,
        pred: &dyn Fn(&sidecall::app::AppState) -> bool,
    ) -> sidecall::app::AppState {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            match self.events.recv_timeout(Duration::from_millis(50)) {
                Ok(sidecall::app::AppEvent::State(s)) if pred(&s) => return *s,
                _ => assert!(std::time::Instant::now() < deadline, "app never reached: {what}"),
            }
        }
    }

    /// Registers `number` as Alice on `server`.
    pub fn register(&self, server: &str, number: &str) {
        self.core.send(sidecall::app::AppCommand::Register(sidecall::app::Credentials {
            server: server.to_string(),
            number: number.into(),
            display_name: "Alice".into(),
            password: PASSWORD.into(),
            region: "DE".into(),
            device_ip: None,
            host_server: false,
            pin: None,
        }));
    }
}
