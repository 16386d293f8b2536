//! Performs the reducer's effects: the server connection, the data side, the ring, files on
//! disk, the hosted server, the watchers. Anything that takes time runs as a task whose
//! result comes back as a [`Done`] input, so the loop never waits and rings and signaling
//! go on meanwhile.

use super::reduce::{self, ClientCall, Clock, DataCall, Done, Effect, Input, Model};
use super::settings::{AppPaths, AppSettings};
use super::state::{AppState, Field, Hosting};
use super::{AppCommand, AppEvent, VideoView, history, platform, watchers};
use crate::calls::WatcherEvent;
use crate::client::config::Profile;
use crate::client::login::{self, LoginParams};
use crate::client::session::{DataEvent, VideoDisplay};
use crate::client::{self, ClientConfig, ClientHandle, Event, SessionController, Waker, api};
use crate::media::ring::Ringer;
use crate::server::{self, RunningServer, ServerConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::mpsc;

/// A finished task's result, with what only the runtime keeps (the hosted server).
enum Internal {
    Done(Done),
    /// As if the window had sent it (a notification's button).
    Command(AppCommand),
    Hosted(Result<(RunningServer, Hosting), String>),
}

pub(super) struct Core {
    paths: AppPaths,
    events: std::sync::mpsc::Sender<AppEvent>,
    wake: Waker,
    model: Model,
    /// What the window was last sent.
    published: Option<AppState>,
    client: Option<ClientHandle>,
    client_events: Option<mpsc::UnboundedReceiver<Event>>,
    sessions: Option<SessionController>,
    hosted: Option<RunningServer>,
    ringer: Ringer,
    /// Requests shown as desktop notifications.
    notifications: platform::Notifications,
    data_tx: mpsc::UnboundedSender<DataEvent>,
    data_rx: mpsc::UnboundedReceiver<DataEvent>,
    /// Use loopback only for WebRTC (tests, demos on one machine).
    loopback: bool,
    /// Results of work done in the background.
    internal_tx: mpsc::UnboundedSender<Internal>,
    internal_rx: mpsc::UnboundedReceiver<Internal>,
    watchers: Option<watchers::Watchers>,
    watcher_rx: Option<mpsc::UnboundedReceiver<WatcherEvent>>,
    video: Arc<VideoView>,
}

impl Core {
    pub(super) fn new(
        paths: AppPaths,
        events: std::sync::mpsc::Sender<AppEvent>,
        wake: Waker,
        loopback: bool,
        video: Arc<VideoView>,
    ) -> Self {
        let settings = AppSettings::load(&paths.settings_file());
        let mut state = AppState::new(settings);
        state.history = history::load(&paths.history_file());
        state.profile = paths.profile_file().ok().and_then(|p| match Profile::load(&p) {
            Ok(p) => p,
            Err(e) => {
                state.notice = Some(e.to_string());
                None
            }
        });
        let (data_tx, data_rx) = mpsc::unbounded_channel();
        let (internal_tx, internal_rx) = mpsc::unbounded_channel();
        Core {
            paths,
            events,
            wake,
            model: Model::new(state),
            published: None,
            client: None,
            client_events: None,
            sessions: None,
            hosted: None,
            ringer: Ringer::new(),
            notifications: platform::Notifications::default(),
            data_tx,
            data_rx,
            loopback,
            internal_tx,
            internal_rx,
            watchers: None,
            watcher_rx: None,
            video,
        }
    }

    /// Sends the state to the window if it changed (signaling and other events that change
    /// nothing visible cost neither a copy nor a repaint).
    fn publish(&mut self) {
        if self.published.as_ref() == Some(&self.model.view) {
            return;
        }
        let snapshot = self.model.view.clone();
        let _ = self.events.send(AppEvent::State(Box::new(snapshot.clone())));
        self.published = Some(snapshot);
        (self.wake)();
    }

    pub(super) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<AppCommand>) {
        self.apply(Input::Start);
        self.publish();
        loop {
            let input = tokio::select! {
                cmd = commands.recv() => match cmd {
                    None | Some(AppCommand::Shutdown) => break,
                    Some(cmd) => Input::Command(cmd),
                },
                ev = next(&mut self.client_events) => match ev {
                    Some(ev) => {
                        if let Some(ended) = self.sessions.as_mut().and_then(|s| s.observe(&ev)) {
                            drop(ended);
                            *self.video.stats.lock() = None;
                        }
                        Input::Server(ev)
                    }
                    None => {
                        self.client_events = None;
                        continue;
                    }
                },
                Some(dev) = self.data_rx.recv() => Input::Data(dev),
                Some(wev) = next(&mut self.watcher_rx) => {
                    if let WatcherEvent::Call(source, call) = &wev {
                        let _ = self.events.send(AppEvent::Call { source: *source, call: call.clone() });
                    }
                    Input::Watcher(wev)
                }
                Some(done) = self.internal_rx.recv() => match done {
                    Internal::Done(d) => Input::Done(d),
                    Internal::Command(c) => Input::Command(c),
                    Internal::Hosted(r) => Input::Done(Done::Hosted(r.map(|(running, hosting)| {
                        self.hosted = Some(running);
                        hosting
                    }))),
                },
            };
            self.apply(input);
            self.publish();
        }
        self.ringer.stop();
        self.watchers = None;
        let _ = std::fs::remove_file(crate::calls::tel::socket_path(&self.paths.profile));
        self.sessions = None;
        if let Some(c) = self.client.take() {
            c.shutdown();
        }
        if let Some(s) = self.hosted.take() {
            s.shutdown().await;
        }
    }

    fn apply(&mut self, input: Input) {
        let effects = reduce::reduce(&mut self.model, input, Clock::now());
        for effect in effects {
            self.perform(effect);
        }
    }

    /// Runs `work` as a task; its result comes back as an input.
    fn spawn(&self, work: impl Future<Output = Done> + Send + 'static) {
        let tx = self.internal_tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(Internal::Done(work.await));
        });
    }

    /// A result known at once (a failed save) goes through the reducer like any other.
    fn notice(&mut self, text: String) {
        self.apply(Input::Done(Done::Notice(text)));
    }

    fn perform(&mut self, effect: Effect) {
        match effect {
            Effect::Host { port, region } => {
                let dir = self.paths.server_dir();
                let tx = self.internal_tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send(Internal::Hosted(host(port, region, dir).await));
                });
            }
            Effect::Login { server_url, creds, register } => {
                let tx = self.internal_tx.clone();
                let progress = move |step: &str| {
                    let _ = tx.send(Internal::Done(Done::LoginProgress(step.to_string())));
                };
                self.spawn(log_in(server_url, creds, register, progress));
            }
            Effect::Verify { server_url, pin, id, code, delay_ms } => {
                let tx = self.internal_tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
                    let trust = crate::client::tls::Trust::from_pin(pin.as_deref());
                    let req = crate::protocol::VerifyRequest { id: id.clone(), code };
                    let result =
                        api::verify(&server_url, &trust, &req).await.map_err(|e| (e.code(), e.to_string()));
                    let _ = tx.send(Internal::Done(Done::Verified { id, result }));
                });
            }
            Effect::ServerLogout { server, token, pin } => {
                tokio::spawn(async move {
                    let trust = crate::client::tls::Trust::from_pin(pin.as_deref());
                    if let Err(e) = api::logout(&server, &trust, &token).await {
                        tracing::warn!("logout on the server failed (the token is forgotten here): {e}");
                    }
                });
            }
            Effect::GoOnline { server, token, device_ip, pin } => {
                self.disconnect();
                let mut cfg = ClientConfig::new(server, token);
                cfg.device_ip = device_ip;
                cfg.trust = crate::client::tls::Trust::from_pin(pin.as_deref());
                let (handle, events) = client::spawn(cfg, Some(self.wake.clone()));
                self.sessions =
                    Some(SessionController::new(handle.clone(), self.loopback, self.data_tx.clone()));
                self.client = Some(handle);
                self.client_events = Some(events);
            }
            Effect::Disconnect => {
                self.disconnect();
                self.client_events = None;
            }
            Effect::Client(call) => {
                let Some(c) = &self.client else { return };
                match call {
                    ClientCall::Dial { req_id, target, offer, region, call_ref, place_call } => {
                        c.dial_full(req_id, &target, offer, Some(region), call_ref, place_call)
                    }
                    ClientCall::SetExtension(ext) => c.set_extension(ext),
                    ClientCall::Answer { session_id, accept } => c.answer(&session_id, accept),
                    ClientCall::End { session_id } => c.end(&session_id),
                    ClientCall::ChangeSettings(change) => c.change_settings(change),
                    ClientCall::SetBlocked(numbers) => c.set_blocked(numbers),
                }
            }
            Effect::StartData { session_id, role, video, receive } => {
                let Some(sessions) = self.sessions.as_mut() else { return };
                let display = VideoDisplay {
                    remote: Some(self.video.remote.clone()),
                    local: Some(self.video.local.clone()),
                };
                let d = sessions.start(session_id, role, receive, video, display);
                *self.video.stats.lock() = Some(d.video_stats_handle());
            }
            Effect::Data(call) => {
                let Some(d) = self.sessions.as_ref().and_then(|s| s.current()) else { return };
                match call {
                    DataCall::StartVideo(params) => d.start_video(params),
                    DataCall::StopVideo => d.stop_video(),
                    DataCall::SetVideoBitrate(bps) => d.set_video_bitrate(bps),
                    DataCall::SendFiles(paths) => d.send_files(paths),
                    DataCall::AcceptFile(id) => d.accept_file(id),
                    DataCall::RejectFile(id) => d.reject_file(id),
                    DataCall::CancelFile { id, way } => d.cancel_file(id, way),
                }
            }
            Effect::StartRing { volume } => self.ringer.start(volume),
            Effect::StopRing => self.ringer.stop(),
            Effect::Notify { session_id, caller, offer } => {
                let tx = self.internal_tx.clone();
                let id = session_id.clone();
                self.notifications.show(session_id, &caller, offer, move |accept| {
                    let _ = tx.send(Internal::Command(AppCommand::Answer { session_id: id, accept }));
                });
            }
            Effect::Unnotify(session_id) => self.notifications.withdraw(&session_id),
            Effect::Attention { caller } => {
                let _ = self.events.send(AppEvent::Ring { caller });
            }
            Effect::SaveSettings(settings) => {
                if let Err(e) = settings.save(&self.paths.settings_file()) {
                    self.notice(format!("could not save the settings: {e}"));
                }
                if let Err(e) = platform::set_autostart(settings.autostart, &self.paths.profile) {
                    self.notice(format!("could not change starting at login: {e}"));
                }
            }
            Effect::SaveProfile(profile) => {
                if let Err(e) = self.paths.profile_file().and_then(|p| profile.save(&p)) {
                    self.notice(format!("the login was not saved: {e}"));
                }
            }
            Effect::SaveHistory => {
                if let Err(e) = history::save(&self.paths.history_file(), &self.model.view.history) {
                    tracing::warn!("cannot save the history: {e}");
                }
            }
            Effect::StartWatchers(settings) => {
                self.watchers = None;
                let (tx, rx) = mpsc::unbounded_channel();
                self.watcher_rx = Some(rx);
                self.watchers = Some(watchers::start(&settings, &self.paths.profile, tx));
            }
            Effect::DetectIp(server) => self.spawn(async move {
                // Name resolution may block: keep it off the runtime's threads.
                let ip =
                    tokio::task::spawn_blocking(move || api::local_ip_towards(&server)).await.ok().flatten();
                Done::IpDetected(ip)
            }),
            Effect::ListCameras => self.spawn(async {
                let found = tokio::task::spawn_blocking(crate::media::camera::list)
                    .await
                    .map_err(|e| format!("listing cameras failed: {e}"))
                    .and_then(|r| r.map_err(|e| e.to_string()));
                Done::CamerasFound(found)
            }),
            Effect::PickFiles => {
                let tx = self.internal_tx.clone();
                tokio::spawn(async move {
                    if let Some(files) =
                        rfd::AsyncFileDialog::new().set_title("Send files").pick_files().await
                    {
                        let paths = files.iter().map(|f| f.path().to_path_buf()).collect();
                        let _ = tx.send(Internal::Done(Done::FilesPicked(paths)));
                    }
                });
            }
            Effect::FritzDial(cfg, number) => self.spawn(async move {
                match crate::calls::tr064::dial(&cfg, &number).await {
                    Ok(()) => {
                        Done::Notice(format!("Your FRITZ!Box rings your phone: pick it up to call {number}."))
                    }
                    Err(e) => Done::Notice(format!("The FRITZ!Box did not place the call: {e}")),
                }
            }),
            Effect::TestWatcher { source, settings } => {
                self.spawn(async move { Done::Notice(watchers::test(source, &settings).await) })
            }
            Effect::TestRing { volume } => self.spawn(async move {
                let d = std::time::Duration::from_millis(1600);
                let played =
                    tokio::task::spawn_blocking(move || crate::media::ring::sound_check(d, volume)).await;
                Done::Notice(match played {
                    Ok(Ok(device)) => format!("Played the ring on {device}."),
                    Ok(Err(e)) => format!("No sound for the ring: {e}. Requests still show in the window."),
                    Err(e) => format!("The sound check failed: {e}"),
                })
            }),
            Effect::ShowInFolder(path) => {
                if let Err(e) = platform::show_in_folder(&path) {
                    self.notice(format!("cannot open the folder: {e}"));
                }
            }
        }
    }

    fn disconnect(&mut self) {
        self.sessions = None;
        *self.video.stats.lock() = None;
        if let Some(old) = self.client.take() {
            old.shutdown();
        }
    }
}

/// Starts the in-app server; returns it with the URLs this app and others use for it.
async fn host(
    port: u16,
    region: String,
    dir: std::path::PathBuf,
) -> Result<(RunningServer, Hosting), String> {
    let mut cfg = ServerConfig::new(SocketAddr::from(([0, 0, 0, 0], port)), dir.clone());
    cfg.hub.default_region = region;
    // HTTPS and WSS with a certificate of its own; others pin its fingerprint.
    cfg.tls = Some(crate::tls::self_signed(&dir).map_err(|e| format!("cannot host a server: {e}"))?);
    // With the relay on its standard port; where that is taken, the server runs without it.
    let mut with_relay = cfg.clone();
    with_relay.relay = server::RelayMode::Own(server::relay::RelayConfig::default());
    let started = match server::start(with_relay).await {
        Err(server::ServerError::Relay(e)) => {
            tracing::warn!("hosting without a relay: {e}");
            server::start(cfg).await
        }
        other => other,
    };
    let running = started.map_err(|e| match e {
        server::ServerError::Bind { .. } => format!(
            "cannot host a server: port {port} is in use (is another Sidecall hosting here?). \
             Connect to that one instead, or free the port."
        ),
        other => format!("cannot host a server: {other}"),
    })?;
    let port = running.addr.port();
    let scheme = if running.fingerprint.is_some() { "https" } else { "http" };
    let local_url = format!("{scheme}://127.0.0.1:{port}");
    // The address of the interface a LAN peer would reach (no packet is sent).
    let lan_url = api::local_ip_towards("http://192.0.2.1:80")
        .filter(|ip| !ip.is_loopback())
        .map(|ip| format!("{scheme}://{ip}:{port}"));
    let fingerprint = running.fingerprint.clone();
    tracing::info!(%local_url, ?lan_url, ?fingerprint, "hosting a server");
    Ok((running, Hosting { local_url, lan_url, fingerprint }))
}

/// Registers (if asked) and logs in with the login form's content.
async fn log_in(
    server_url: String,
    creds: super::state::Credentials,
    register: bool,
    progress: impl Fn(&str),
) -> Done {
    let params = LoginParams {
        server: server_url,
        number: creds.number.clone(),
        password: creds.password.clone(),
        region: (!creds.region.is_empty()).then(|| creds.region.clone()),
        device_ip: creds.device_ip,
        device_name: None,
        pin: creds.pin.clone(),
    };
    let failed = |e: api::ApiError, creds: super::state::Credentials| match e {
        api::ApiError::Untrusted { url, fingerprint } => {
            Done::LoginUntrusted { creds: Box::new(creds), register, url, fingerprint }
        }
        e => Done::LoginFailed { field: field_of(&e), message: e.to_string() },
    };
    if register {
        progress("Creating your account…");
        match login::register(&params, &creds.display_name).await {
            Ok(crate::protocol::RegisterAnswer::Done(_)) => {}
            Ok(crate::protocol::RegisterAnswer::Pending(p)) => {
                return Done::VerificationPending {
                    creds: Box::new(creds),
                    server_url: params.server,
                    verification: p.verification,
                    message: p.message,
                };
            }
            Err(e) => return failed(e, creds),
        }
    }
    progress("Logging in…");
    match login::login(&params).await {
        Ok(done) => Done::LoggedIn { profile: Box::new(done.profile), creds: Box::new(creds) },
        // Registered already: the retry after trusting only logs in.
        Err(e) if register => match failed(e, creds) {
            Done::LoginUntrusted { creds, url, fingerprint, .. } => {
                Done::LoginUntrusted { creds, register: false, url, fingerprint }
            }
            other => other,
        },
        Err(e) => failed(e, creds),
    }
}

/// Which field of the login form an API error is about.
fn field_of(e: &api::ApiError) -> Option<Field> {
    use crate::protocol::{ErrorCode, FieldName};
    match e {
        api::ApiError::BadUrl(_)
        | api::ApiError::Unreachable { .. }
        | api::ApiError::Unexpected { .. }
        | api::ApiError::Untrusted { .. }
        | api::ApiError::CertificateChanged { .. } => Some(Field::Server),
        api::ApiError::Refused { code, field, .. } => match (code, field) {
            (ErrorCode::InvalidNumber | ErrorCode::AccountExists, _) => Some(Field::Number),
            (ErrorCode::WrongCredentials | ErrorCode::RateLimited, _) => Some(Field::Password),
            (ErrorCode::InvalidField, Some(FieldName::DisplayName)) => Some(Field::DisplayName),
            (ErrorCode::InvalidField, Some(FieldName::Number)) => Some(Field::Number),
            (ErrorCode::InvalidField, _) => Some(Field::Password),
            _ => None,
        },
    }
}

async fn next<T>(rx: &mut Option<mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
