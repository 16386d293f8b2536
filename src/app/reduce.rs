//! The app's logic as one pure function: [`reduce`] takes the model and one input (a command
//! from the window, an event from the server, the data side or a call watcher, or the result
//! of earlier work) and changes the model, returning the [`Effect`]s to perform. It does no
//! I/O and reads no clock (the time comes in [`Clock`]), so every call-state rule is tested
//! here in milliseconds, without sockets; the runtime performs the effects and feeds their
//! results back as [`Done`] inputs.

use super::AppCommand;
use super::history::{self, Direction, HistoryEntry, HistoryOutcome};
use super::settings::{AppSettings, OnCall, StartWhen};
use super::state::{
    Active, AppState, Connection, Credentials, Field, FileRow, FileStatus, Hosting, LoginStatus, Marks,
    Outgoing, OutgoingStatus, Ringing, VerifyView, VideoSending, VideoState,
};
use crate::calls::{CallEvent, Source, WatcherEvent};
use crate::client::config::Profile;
use crate::client::session::{DataEvent, VideoEvent};
use crate::client::transfer::{ReceiveConfig, TransferEvent, Way};
use crate::client::{Event, StopReason};
use crate::media::camera::CameraInfo;
use crate::media::video::{VideoParams, VideoSource};
use crate::protocol::{CallStage, Offer, Outcome, Party, Role, SessionId, SettingsChange};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The time an input happened at.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub now: Instant,
    /// Unix seconds (for the history).
    pub unix: u64,
}

impl Clock {
    pub fn now() -> Clock {
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Clock { now: Instant::now(), unix }
    }
}

/// Everything the core knows: what the window shows, and what only the logic needs.
#[derive(Clone, Debug)]
pub struct Model {
    pub view: AppState,
    /// The window has the focus (no desktop notification needed).
    pub focused: bool,
    /// A client connection runs (logged in).
    client: bool,
    /// The session whose data side runs.
    data: Option<SessionId>,
    /// The request id of the next dial.
    next_req: u64,
    /// A call to request as soon as the connection is up: (call_ref, E.164).
    pending_call: Option<(String, String)>,
    /// A session accepted with my camera off, although video was offered.
    camera_off_for: Option<SessionId>,
    /// The phone call (call_ref) ended before its request's session id was known.
    call_ended_early: Option<String>,
    /// A call the phone dialed, waiting to be answered before the session is requested
    /// ([`StartWhen::Answered`]): its reference and the number as dialed.
    awaiting_answer: Option<(String, String)>,
    /// The number the FRITZ!Box was asked to dial (its call monitor reports it next).
    fritz_dialed: Option<String>,
    /// What to do once the in-app server runs.
    after_host: Option<AfterHost>,
    /// A login waiting for the user to trust the server's certificate.
    after_trust: Option<(Credentials, bool)>,
    /// A registration waiting for its code.
    verifying: Option<account::PendingVerify>,
    /// Incoming calls the watchers saw lately (does a request belong to one?).
    recent_calls: crate::calls::linked::RecentCalls,
    /// The marks of a request accepted automatically, until its session starts.
    auto_marks: Option<(SessionId, Marks)>,
}

#[derive(Clone, Debug, PartialEq)]
enum AfterHost {
    Login { creds: Credentials, register: bool },
    Resume { token: String, device_ip: Option<IpAddr> },
}

impl Model {
    pub fn new(view: AppState) -> Model {
        Model {
            view,
            focused: true,
            client: false,
            data: None,
            next_req: 1,
            pending_call: None,
            camera_off_for: None,
            call_ended_early: None,
            awaiting_answer: None,
            fritz_dialed: None,
            after_host: None,
            after_trust: None,
            verifying: None,
            recent_calls: Default::default(),
            auto_marks: None,
        }
    }
}

/// One thing that happened.
#[derive(Debug)]
pub enum Input {
    /// The core has started: go online with the saved login.
    Start,
    Command(AppCommand),
    Server(Event),
    Data(DataEvent),
    Watcher(WatcherEvent),
    Done(Done),
}

/// The result of an effect that took time (it ran as a task; the loop did not wait).
#[derive(Debug)]
pub enum Done {
    Hosted(Result<Hosting, String>),
    /// A login step: "Creating your account…", "Logging in…".
    LoginProgress(String),
    LoggedIn {
        profile: Box<Profile>,
        /// The login's credentials (the settings keep the region and hosting choice).
        creds: Box<Credentials>,
    },
    LoginFailed {
        field: Option<Field>,
        message: String,
    },
    /// Registered; the number waits for its proof.
    VerificationPending {
        creds: Box<Credentials>,
        server_url: String,
        verification: crate::protocol::Verification,
        message: String,
    },
    /// The server's answer to a verification code (or to "approved yet?").
    Verified {
        id: String,
        result: Result<crate::protocol::VerifyAnswer, (Option<crate::protocol::ErrorCode>, String)>,
    },
    /// The server's certificate is self-signed: the user decides.
    LoginUntrusted {
        creds: Box<Credentials>,
        register: bool,
        url: String,
        fingerprint: String,
    },
    IpDetected(Option<IpAddr>),
    CamerasFound(Result<Vec<CameraInfo>, String>),
    FilesPicked(Vec<PathBuf>),
    /// Something to tell the user (a test's result, a failed save).
    Notice(String),
}

/// A call on the server connection.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientCall {
    Dial {
        req_id: u64,
        target: String,
        offer: Offer,
        region: String,
        call_ref: Option<String>,
        place_call: bool,
    },
    SetExtension(Option<String>),
    Answer {
        session_id: SessionId,
        accept: bool,
    },
    End {
        session_id: SessionId,
    },
    ChangeSettings(SettingsChange),
    SetBlocked(Vec<String>),
}

/// A call on the running session's data side.
#[derive(Clone, Debug, PartialEq)]
pub enum DataCall {
    StartVideo(VideoParams),
    StopVideo,
    SetVideoBitrate(u32),
    SendFiles(Vec<PathBuf>),
    AcceptFile(u32),
    RejectFile(u32),
    CancelFile { id: u32, way: Way },
}

/// What the runtime is to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Start the in-app server; answers [`Done::Hosted`].
    Host {
        port: u16,
        region: String,
    },
    /// Register (if asked) and log in; answers [`Done::LoginProgress`], then
    /// [`Done::LoggedIn`] or [`Done::LoginFailed`].
    Login {
        server_url: String,
        creds: Credentials,
        register: bool,
    },
    /// Send a registration's code (`None`: ask whether an administrator approved it) after
    /// `delay_ms`; answers [`Done::Verified`].
    Verify {
        server_url: String,
        pin: Option<String>,
        id: String,
        code: Option<String>,
        delay_ms: u64,
    },
    /// Revoke the token on the server (in the background; failures are logged).
    ServerLogout {
        server: String,
        token: String,
        pin: Option<String>,
    },
    /// (Re)start the server connection.
    GoOnline {
        server: String,
        token: String,
        device_ip: Option<IpAddr>,
        /// The trusted certificate fingerprint of a self-signed server.
        pin: Option<String>,
    },
    /// Stop the server connection.
    Disconnect,
    Client(ClientCall),
    /// Start the data side of an accepted session.
    StartData {
        session_id: SessionId,
        role: Role,
        video: Option<VideoParams>,
        receive: ReceiveConfig,
    },
    Data(DataCall),
    StartRing {
        volume: f32,
    },
    StopRing,
    /// A desktop notification with Accept and Decline (the window is not focused).
    Notify {
        session_id: SessionId,
        caller: Party,
        offer: Offer,
    },
    /// Withdraw the request's notification (it stopped ringing here).
    Unnotify(SessionId),
    /// Tell the window a request rings (it asks for attention).
    Attention {
        caller: Party,
    },
    SaveSettings(Box<AppSettings>),
    SaveProfile(Profile),
    /// Save `view.history` as it is now.
    SaveHistory,
    /// (Re)start the call watchers for these settings.
    StartWatchers(Box<AppSettings>),
    DetectIp(String),
    ListCameras,
    PickFiles,
    TestWatcher {
        source: Source,
        settings: Box<AppSettings>,
    },
    /// Have the user's FRITZ!Box place the phone call (TR-064); failures come back as
    /// [`Done::Notice`].
    FritzDial(crate::calls::tr064::Tr064Config, String),
    TestRing {
        volume: f32,
    },
    ShowInFolder(PathBuf),
}

mod data;
mod phone;
use data::data_event;
#[cfg(test)]
use data::transfer_event;
use phone::{fritz_dial, watcher_event};
mod account;

/// Applies one input; returns what to do, in order.
pub fn reduce(m: &mut Model, input: Input, clock: Clock) -> Vec<Effect> {
    let mut fx = Vec::new();
    match input {
        Input::Start => start(m, &mut fx),
        Input::Command(cmd) => command(m, cmd, clock, &mut fx),
        Input::Server(ev) => server_event(m, ev, clock, &mut fx),
        Input::Data(ev) => data_event(m, ev, clock),
        Input::Watcher(ev) => watcher_event(m, ev, clock, &mut fx),
        Input::Done(done) => finished(m, done, &mut fx),
    }
    fx
}

fn start(m: &mut Model, fx: &mut Vec<Effect>) {
    restart_watchers(m, m.view.settings.clone(), fx);
    let Some(profile) = m.view.profile.clone() else { return };
    let Some(token) = profile.token.clone() else { return };
    if m.view.settings.host_server {
        m.after_host = Some(AfterHost::Resume { token, device_ip: profile.device_ip });
        host(m, fx);
    } else {
        go_online(m, profile.server, token, profile.device_ip, profile.server_fingerprint, fx);
    }
}

/// The watchers start anew: the statuses of the old ones go (each new one reports its own).
fn restart_watchers(m: &mut Model, settings: AppSettings, fx: &mut Vec<Effect>) {
    m.view.watchers.clear();
    fx.push(Effect::StartWatchers(Box::new(settings)));
}

fn host(m: &mut Model, fx: &mut Vec<Effect>) {
    m.view.login = LoginStatus::Busy("Starting the server on this computer…".into());
    fx.push(Effect::Host { port: m.view.settings.host_port, region: m.view.settings.region.clone() });
}

fn go_online(
    m: &mut Model,
    server: String,
    token: String,
    device_ip: Option<IpAddr>,
    pin: Option<String>,
    fx: &mut Vec<Effect>,
) {
    m.client = true;
    m.view.connection = Connection::Connecting { attempt: 1 };
    fx.push(Effect::GoOnline { server, token, device_ip, pin });
}

fn login(m: &mut Model, mut creds: Credentials, register: bool, fx: &mut Vec<Effect>) {
    let server_url = if creds.host_server {
        match &m.view.hosting {
            Some(h) => {
                // Our own server: its certificate is the one we made.
                creds.pin = h.fingerprint.clone();
                h.local_url.clone()
            }
            None => {
                // Host first; the login follows when the server runs.
                m.after_host = Some(AfterHost::Login { creds, register });
                host(m, fx);
                return;
            }
        }
    } else {
        match crate::client::api::normalize_server_url(&creds.server) {
            Ok(url) => url,
            Err(e) => {
                m.view.login = LoginStatus::Failed { field: Some(Field::Server), message: e.to_string() };
                return;
            }
        }
    };
    m.view.login = LoginStatus::Busy(if register { "Creating your account…" } else { "Logging in…" }.into());
    fx.push(Effect::Login { server_url, creds, register });
}

fn command(m: &mut Model, cmd: AppCommand, clock: Clock, fx: &mut Vec<Effect>) {
    let v = &mut m.view;
    match cmd {
        AppCommand::Register(c) => login(m, c, true, fx),
        AppCommand::Login(c) => login(m, c, false, fx),
        AppCommand::SubmitCode(code) => account::submit(m, code, fx),
        AppCommand::CancelVerification => account::cancel(m),
        AppCommand::TrustServer { fingerprint } => match (m.after_trust.take(), &v.login) {
            (Some((mut creds, register)), LoginStatus::Untrusted { fingerprint: shown, .. })
                if *shown == fingerprint =>
            {
                creds.pin = Some(fingerprint);
                login(m, creds, register, fx);
            }
            _ => v.login = LoginStatus::Idle,
        },
        AppCommand::DistrustServer => {
            m.after_trust = None;
            v.login = LoginStatus::Failed {
                field: Some(Field::Server),
                message: "Not trusted: nothing was sent to that server.".into(),
            };
        }
        AppCommand::Logout => {
            m.client = false;
            fx.push(Effect::Disconnect);
            fx.push(Effect::StopRing);
            if let Some(mut profile) = v.profile.take() {
                if let Some(token) = profile.token.take() {
                    let pin = profile.server_fingerprint.clone();
                    fx.push(Effect::ServerLogout { server: profile.server.clone(), token, pin });
                }
                profile.device_id = None;
                fx.push(Effect::SaveProfile(profile.clone()));
                v.profile = Some(profile);
            }
            v.connection = Connection::LoggedOut;
            v.account = None;
            v.outgoing = None;
            v.incoming.clear();
            v.active = None;
        }
        AppCommand::DetectIp { server } => fx.push(Effect::DetectIp(server)),
        AppCommand::Dial { target, offer } => dial(m, target, offer, None, false, fx),
        AppCommand::Call { target, offer } => {
            if v.can_place_calls {
                dial(m, target, offer, None, true, fx)
            } else {
                fritz_dial(m, target, fx)
            }
        }
        AppCommand::SetExtension(ext) => client_call(m, ClientCall::SetExtension(ext), fx),
        AppCommand::AcceptWithoutVideo(session_id) => {
            m.camera_off_for = Some(session_id.clone());
            client_call(m, ClientCall::Answer { session_id: session_id.clone(), accept: true }, fx);
            stop_ringing_for(m, &session_id, None, clock, fx);
        }
        AppCommand::Answer { session_id, accept } => {
            client_call(m, ClientCall::Answer { session_id: session_id.clone(), accept }, fx);
            let outcome = if accept { None } else { Some(HistoryOutcome::Declined) };
            stop_ringing_for(m, &session_id, outcome, clock, fx);
        }
        AppCommand::End { session_id } => client_call(m, ClientCall::End { session_id }, fx),
        AppCommand::SetAccepting(on) => {
            let change = SettingsChange { accepting_sessions: Some(on), ..Default::default() };
            client_call(m, ClientCall::ChangeSettings(change), fx)
        }
        AppCommand::SetDoNotDisturb(on) => {
            let change = SettingsChange { do_not_disturb: Some(on), ..Default::default() };
            client_call(m, ClientCall::ChangeSettings(change), fx)
        }
        AppCommand::SetHideAddress(on) => {
            let change = SettingsChange { hide_address: Some(on), ..Default::default() };
            client_call(m, ClientCall::ChangeSettings(change), fx)
        }
        AppCommand::SaveSettings { settings, blocked } => save_settings(m, *settings, blocked, fx),
        AppCommand::WindowFocused(f) => m.focused = f,
        AppCommand::StartVideo(source) => {
            if m.data.is_some() {
                fx.push(Effect::Data(DataCall::StartVideo(v.settings.video.params(source))));
                v.video.sending = VideoSending::Starting;
            } else {
                v.notice = Some("Video can be started during a session.".into());
            }
        }
        AppCommand::StopVideo => {
            if m.data.is_some() {
                fx.push(Effect::Data(DataCall::StopVideo));
            }
            v.video.sending = VideoSending::Off;
        }
        AppCommand::ListCameras => fx.push(Effect::ListCameras),
        AppCommand::SetVideoSource(source) => match source.parse::<VideoSource>() {
            Ok(s) => {
                change_settings(m, |v| v.video.source = s.to_string(), fx);
                let running =
                    matches!(m.view.video.sending, VideoSending::On { .. } | VideoSending::Starting);
                if m.data.is_some() && running {
                    fx.push(Effect::Data(DataCall::StartVideo(m.view.settings.video.params(Some(s)))));
                    m.view.video.sending = VideoSending::Starting;
                }
            }
            Err(e) => v.notice = Some(e),
        },
        AppCommand::SetMirrorPreview(on) => change_settings(m, |v| v.video.mirror_preview = on, fx),
        AppCommand::DismissNotice => v.notice = None,
        AppCommand::SendFiles(paths) => send_files(m, paths, fx),
        AppCommand::PickFiles => fx.push(Effect::PickFiles),
        AppCommand::AcceptFile(id) => data_call(m, DataCall::AcceptFile(id), fx),
        AppCommand::RejectFile(id) => data_call(m, DataCall::RejectFile(id), fx),
        AppCommand::CancelFile { id, way } => data_call(m, DataCall::CancelFile { id, way }, fx),
        AppCommand::TestWatcher { source, settings } => fx.push(Effect::TestWatcher { source, settings }),
        AppCommand::CallPrompt(yes) => {
            if let Some((call_ref, number)) = v.call_prompt.take()
                && yes
            {
                dial(m, number, Offer { files: true, video: false }, Some(call_ref), false, fx);
            }
        }
        AppCommand::TelLink(number) => watcher_event(
            m,
            WatcherEvent::Call(Source::Tel, CallEvent::Outgoing { call_ref: "tel:launch".into(), number }),
            clock,
            fx,
        ),
        AppCommand::ShowInFolder(path) => fx.push(Effect::ShowInFolder(path)),
        AppCommand::TestRing { volume } => fx.push(Effect::TestRing { volume }),
        AppCommand::Shutdown => {}
    }
}

fn client_call(m: &Model, call: ClientCall, fx: &mut Vec<Effect>) {
    if m.client {
        fx.push(Effect::Client(call));
    }
}

fn data_call(m: &Model, call: DataCall, fx: &mut Vec<Effect>) {
    if m.data.is_some() {
        fx.push(Effect::Data(call));
    }
}

fn send_files(m: &mut Model, paths: Vec<PathBuf>, fx: &mut Vec<Effect>) {
    if m.data.is_none() {
        m.view.notice = Some("Files can be sent during a session.".into());
    } else if !paths.is_empty() {
        fx.push(Effect::Data(DataCall::SendFiles(paths)));
    }
}

fn dial(
    m: &mut Model,
    target: String,
    offer: Offer,
    call_ref: Option<String>,
    place_call: bool,
    fx: &mut Vec<Effect>,
) {
    if !m.client || (place_call && !m.view.can_place_calls) {
        return;
    }
    if m.view.outgoing.as_ref().is_some_and(|o| !o.status.is_final()) {
        m.view.notice = Some("a request is already ringing: cancel it first".into());
        return;
    }
    let req_id = m.next_req;
    m.next_req += 1;
    fx.push(Effect::Client(ClientCall::Dial {
        req_id,
        target: target.clone(),
        offer,
        region: m.view.settings.region.clone(),
        call_ref: call_ref.clone(),
        place_call,
    }));
    let status =
        if place_call { OutgoingStatus::Calling(CallStage::CallingYou) } else { OutgoingStatus::Dialing };
    m.view.outgoing = Some(Outgoing { req_id, target, offer, session_id: None, status, call_ref });
}

/// Saves the settings with one change (the block list as it is).
fn change_settings(m: &mut Model, change: impl FnOnce(&mut AppSettings), fx: &mut Vec<Effect>) {
    let mut settings = m.view.settings.clone();
    change(&mut settings);
    let blocked = m.view.blocked.clone();
    save_settings(m, settings, blocked, fx);
}

fn save_settings(m: &mut Model, mut settings: AppSettings, blocked: Vec<String>, fx: &mut Vec<Effect>) {
    let region = settings.region.clone();
    let mut bad = Vec::new();
    settings.auto_accept = settings
        .auto_accept
        .iter()
        .filter(|n| !n.trim().is_empty())
        .filter_map(|n| match crate::number::normalize(n, Some(&region)) {
            Ok(e) => Some(e.to_string()),
            Err(e) => {
                bad.push(e.to_string());
                None
            }
        })
        .collect();
    settings.ring_volume = settings.ring_volume.clamp(0.0, 1.0);
    fx.push(Effect::SaveSettings(Box::new(settings.clone())));
    if !bad.is_empty() {
        m.view.notice = Some(format!("not added to auto-accept: {}", bad.join("; ")));
    }
    let old = &m.view.settings;
    let watchers_changed =
        (&settings.fritz, &settings.ami, &settings.phone) != (&old.fritz, &old.ami, &old.phone);
    if settings.video.bitrate_kbps != old.video.bitrate_kbps {
        // Takes effect at once for the video being sent.
        data_call(m, DataCall::SetVideoBitrate(settings.video.params(None).effective_bitrate()), fx);
    }
    if watchers_changed {
        restart_watchers(m, settings.clone(), fx);
    }
    m.view.settings = settings;
    let blocked: Vec<String> = blocked.into_iter().filter(|n| !n.trim().is_empty()).collect();
    if blocked != m.view.blocked {
        client_call(m, ClientCall::SetBlocked(blocked), fx);
    }
}

fn finished(m: &mut Model, done: Done, fx: &mut Vec<Effect>) {
    let v = &mut m.view;
    match done {
        Done::Hosted(Ok(hosting)) => {
            let url = hosting.local_url.clone();
            let pin = hosting.fingerprint.clone();
            v.hosting = Some(hosting);
            v.login = LoginStatus::Idle;
            match m.after_host.take() {
                Some(AfterHost::Login { creds, register }) => login(m, creds, register, fx),
                Some(AfterHost::Resume { token, device_ip }) => go_online(m, url, token, device_ip, pin, fx),
                None => {}
            }
        }
        Done::Hosted(Err(message)) => match m.after_host.take() {
            Some(AfterHost::Login { .. }) => {
                v.login = LoginStatus::Failed { field: Some(Field::Server), message }
            }
            Some(AfterHost::Resume { token, device_ip }) => {
                // Go online with the saved server all the same: it may run elsewhere.
                v.login = LoginStatus::Idle;
                v.notice = Some(message);
                if let Some(p) = v.profile.as_ref() {
                    let (server, pin) = (p.server.clone(), p.server_fingerprint.clone());
                    go_online(m, server, token, device_ip, pin, fx);
                }
            }
            None => v.notice = Some(message),
        },
        Done::LoginProgress(step) => v.login = LoginStatus::Busy(step),
        Done::LoginFailed { field, message } => v.login = LoginStatus::Failed { field, message },
        Done::VerificationPending { creds, server_url, verification, message } => {
            account::pending(m, *creds, server_url, verification, message, fx)
        }
        Done::Verified { id, result } => account::answered(m, id, result, fx),
        Done::LoginUntrusted { creds, register, url, fingerprint } => {
            v.login = LoginStatus::Untrusted { url, fingerprint };
            m.after_trust = Some((*creds, register));
        }
        Done::LoggedIn { profile, creds } => {
            let profile = *profile;
            fx.push(Effect::SaveProfile(profile.clone()));
            let mut settings = v.settings.clone();
            settings.host_server = creds.host_server;
            if let Some(r) = profile.region.clone() {
                settings.region = r;
            }
            if settings != v.settings {
                fx.push(Effect::SaveSettings(Box::new(settings.clone())));
                v.settings = settings;
            }
            let token = profile.token.clone().unwrap_or_default();
            let (server, device_ip) = (profile.server.clone(), profile.device_ip);
            let pin = profile.server_fingerprint.clone();
            v.profile = Some(profile);
            v.login = LoginStatus::Idle;
            go_online(m, server, token, device_ip, pin, fx);
        }
        Done::IpDetected(ip) => v.detected_ip = ip,
        Done::CamerasFound(found) => v.video.cameras = Some(found),
        Done::FilesPicked(paths) => send_files(m, paths, fx),
        Done::Notice(text) => v.notice = Some(text),
    }
}

fn record(m: &mut Model, entry: HistoryEntry, fx: &mut Vec<Effect>) {
    history::add(&mut m.view.history, entry);
    fx.push(Effect::SaveHistory);
}

/// An incoming request stopped ringing here; `outcome` goes to the history if given.
fn stop_ringing_for(
    m: &mut Model,
    id: &SessionId,
    outcome: Option<HistoryOutcome>,
    clock: Clock,
    fx: &mut Vec<Effect>,
) -> Option<Marks> {
    let mut marks = None;
    if let Some(pos) = m.view.incoming.iter().position(|r| r.session_id == *id) {
        let r = m.view.incoming.remove(pos);
        fx.push(Effect::Unnotify(id.clone()));
        marks = Some(r.marks);
        if let Some(outcome) = outcome {
            let entry = HistoryEntry {
                at: clock.unix,
                direction: Direction::Incoming,
                number: r.caller.number,
                name: Some(r.caller.display_name),
                outcome,
                verified: Some(r.marks.verified),
                call_match: r.marks.call_match,
            };
            record(m, entry, fx);
        }
    }
    if m.view.incoming.is_empty() {
        fx.push(Effect::StopRing);
    }
    marks
}

fn outgoing_done(
    m: &mut Model,
    status: OutgoingStatus,
    outcome: HistoryOutcome,
    clock: Clock,
    fx: &mut Vec<Effect>,
) {
    let Some(o) = m.view.outgoing.as_mut() else { return };
    o.status = status;
    let number = o.target.clone();
    if !matches!(outcome, HistoryOutcome::Completed { .. }) {
        let entry = HistoryEntry {
            at: clock.unix,
            direction: Direction::Outgoing,
            number,
            name: None,
            outcome,
            verified: None,
            call_match: None,
        };
        record(m, entry, fx);
    }
}

fn server_event(m: &mut Model, ev: Event, clock: Clock, fx: &mut Vec<Effect>) {
    let v = &mut m.view;
    match ev {
        Event::Connecting { attempt } => v.connection = Connection::Connecting { attempt },
        Event::Online { account, settings, can_place_calls, extension, .. } => {
            v.connection = Connection::Online;
            v.can_place_calls = can_place_calls;
            v.extension = extension;
            v.account = Some(account);
            v.server_settings = settings;
            if let Some((call_ref, number)) = m.pending_call.take() {
                dial(m, number, Offer { files: true, video: false }, Some(call_ref), false, fx);
            }
        }
        Event::Offline { reason, retry_in_ms } => v.connection = Connection::Offline { reason, retry_in_ms },
        Event::Extension { extension } => v.extension = extension,
        Event::CallProgress { req_id, session_id, stage } => {
            if let Some(o) = v.outgoing.as_mut().filter(|o| o.req_id == req_id && !o.status.is_final()) {
                o.session_id = Some(session_id);
                o.status = OutgoingStatus::Calling(stage);
            }
        }
        Event::LoggedOut { reason } => {
            v.connection = Connection::LoggedOut;
            v.account = None;
            v.login = LoginStatus::Failed {
                field: Some(Field::Password),
                message: format!("{reason}: log in again"),
            };
            if let Some(p) = v.profile.as_mut() {
                p.token = None;
            }
        }
        Event::Settings { settings } => v.server_settings = settings,
        Event::Blocked { numbers } => v.blocked = numbers,
        Event::Incoming { session_id, caller, offer, expires_in_ms, .. } => {
            phone::incoming(m, session_id, caller, offer, expires_in_ms, clock, fx)
        }
        Event::IncomingClosed { session_id, reason } => {
            let outcome = match reason {
                StopReason::AnsweredElsewhere => None,
                StopReason::DeclinedElsewhere => Some(HistoryOutcome::Declined),
                _ => Some(HistoryOutcome::Missed),
            };
            stop_ringing_for(m, &session_id, outcome, clock, fx);
        }
        Event::DialPending { req_id, session_id } => {
            if let Some(o) = v.outgoing.as_mut().filter(|o| o.req_id == req_id) {
                if o.call_ref.is_some() && o.call_ref == m.call_ended_early.take() {
                    tracing::info!("the phone call ended while the request went out: cancelling it");
                    fx.push(Effect::Client(ClientCall::End { session_id: session_id.clone() }));
                }
                o.session_id = Some(session_id);
                o.status = OutgoingStatus::Ringing;
            }
        }
        Event::DialResult { req_id, outcome, .. } => {
            if v.outgoing.as_ref().is_none_or(|o| o.req_id != req_id) {
                return;
            }
            let (status, hist) = match outcome {
                Outcome::Accepted => (OutgoingStatus::Accepted, HistoryOutcome::Completed { seconds: 0 }),
                Outcome::Declined => (OutgoingStatus::Declined, HistoryOutcome::Declined),
                Outcome::TimedOut => (OutgoingStatus::NoAnswer, HistoryOutcome::NoAnswer),
                Outcome::Unavailable => (OutgoingStatus::Unavailable, HistoryOutcome::Unavailable),
                Outcome::InvalidNumber { reason } => {
                    (OutgoingStatus::InvalidNumber(reason.clone()), HistoryOutcome::Failed { reason })
                }
                Outcome::Cancelled => (OutgoingStatus::Cancelled, HistoryOutcome::Cancelled),
                Outcome::CallFailed { reason } => {
                    let text = reason.describe().to_string();
                    (OutgoingStatus::Failed(text.clone()), HistoryOutcome::Failed { reason: text })
                }
            };
            outgoing_done(m, status, hist, clock, fx);
        }
        Event::DialFailed { req_id, message, .. } => {
            if v.outgoing.as_ref().is_some_and(|o| o.req_id == req_id) {
                let outcome = HistoryOutcome::Failed { reason: message.clone() };
                outgoing_done(m, OutgoingStatus::Failed(message), outcome, clock, fx);
            }
        }
        Event::SessionStarted { session_id, role, offer, peer, .. } => {
            let marks = stop_ringing_for(m, &session_id, None, clock, fx)
                .or_else(|| m.auto_marks.take().filter(|(s, _)| *s == session_id).map(|(_, k)| k));
            let v = &mut m.view;
            v.last_ended = None;
            v.files.clear();
            v.channel_open = false;
            v.path = None;
            v.video = VideoState { cameras: v.video.cameras.take(), ..Default::default() };
            // Video from the start when it was offered: the caller asked for it, and the
            // callee accepted it (if the setting says so).
            let camera_off = m.camera_off_for.take().is_some_and(|s| s == session_id);
            let video = (offer.video
                && !camera_off
                && (role == Role::Caller || v.settings.video.camera_on_video_offer))
                .then(|| v.settings.video.params(None));
            if video.is_some() {
                v.video.sending = VideoSending::Starting;
            }
            if m.client {
                let receive = ReceiveConfig {
                    dir: v
                        .settings
                        .save_dir
                        .clone()
                        .unwrap_or_else(crate::client::transfer::default_save_dir),
                    auto_accept: v.settings.auto_accept_files,
                };
                fx.push(Effect::StartData { session_id: session_id.clone(), role, video, receive });
                m.data = Some(session_id.clone());
            }
            let call_ref = v
                .outgoing
                .as_ref()
                .filter(|o| o.session_id.as_ref() == Some(&session_id))
                .and_then(|o| o.call_ref.clone());
            let marks = marks.filter(|_| role == Role::Callee);
            v.active = Some(Active { session_id, role, peer, offer, since: clock.now, call_ref, marks });
        }
        Event::SessionEnded { session_id, reason } => {
            if m.data.as_ref() == Some(&session_id) {
                m.data = None;
                v.channel_open = false;
                v.path = None;
                v.video.sending = VideoSending::Off;
                v.video.remote_on = false;
            }
            if let Some(a) = v.active.take_if(|a| a.session_id == session_id) {
                v.last_ended = Some(reason);
                if v.outgoing.as_ref().is_some_and(|o| o.session_id.as_ref() == Some(&session_id)) {
                    v.outgoing = None;
                }
                let entry = HistoryEntry {
                    at: clock.unix,
                    direction: match a.role {
                        Role::Caller => Direction::Outgoing,
                        Role::Callee => Direction::Incoming,
                    },
                    number: a.peer.number,
                    name: Some(a.peer.display_name),
                    outcome: HistoryOutcome::Completed {
                        seconds: clock.now.saturating_duration_since(a.since).as_secs(),
                    },
                    verified: a.marks.map(|k| k.verified),
                    call_match: a.marks.and_then(|k| k.call_match),
                };
                record(m, entry, fx);
            }
        }
        Event::Error { message, .. } => v.notice = Some(message),
        // Signals are routed to the data side by the session controller.
        // Signals and fresh ICE servers are the session controller's.
        Event::Signal { .. } | Event::IceServers { .. } | Event::Stopped => {}
    }
}

#[cfg(test)]
#[path = "reduce_tests.rs"]
mod tests;
