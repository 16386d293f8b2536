//! The headless command line of `sidecall`: accounts, dialing and listening, for scripts
//! and tests. Human-readable lines on stdout (or JSON lines with `--json`), progress and
//! problems on stderr, outcomes in the exit code.

use crate::client::config::{self, Profile};
use crate::client::session::{
    self, DataConfig, DataEvent, DataSession, VideoDisplay, VideoEvent, VideoStats,
};
use crate::client::transfer::{self, ReceiveConfig, TransferEvent, Way};
use crate::client::{self, ClientConfig, ClientHandle, Event, api};
use crate::media::video::{Size, VideoParams, VideoSource};
use crate::protocol::{ErrorCode, LoginRequest, Offer, Outcome, RegisterRequest, Role, SessionId};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::io::{BufRead, IsTerminal};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;

/// Exit codes of the `sidecall` binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    Ok = 0,
    /// Connection, configuration or server problem; the message says which.
    Error = 1,
    /// Bad command line (clap's own code).
    Usage = 2,
    Declined = 3,
    TimedOut = 4,
    Unavailable = 5,
    InvalidNumber = 6,
    Cancelled = 7,
    /// Not logged in, or the login was revoked: run `sidecall account login`.
    LoginNeeded = 8,
}

#[derive(Parser, Debug)]
#[command(
    name = "sidecall",
    version,
    about = "Video and files beside your phone call",
    after_help = "Without a command, opens the desktop app."
)]
pub struct Cli {
    /// Profile to use: each keeps its own server, number and login (for two instances on one
    /// machine, give the second `--profile b`).
    #[arg(long, global = true, default_value = "default", env = "SIDECALL_PROFILE")]
    pub profile: String,
    /// Folder for profiles (default: the platform's config folder).
    #[arg(long, global = true, env = "SIDECALL_CONFIG_DIR")]
    pub config_dir: Option<PathBuf>,
    /// More log output on stderr (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create an account, log in or out, or show the saved login.
    #[command(subcommand)]
    Account(AccountCmd),
    /// Show or change whether you take data sessions, and do-not-disturb.
    Settings(SettingsArgs),
    /// Ask the owner of NUMBER for a data session and stay in it until it ends.
    Dial(DialArgs),
    /// Stay online and answer incoming requests.
    Listen(ListenArgs),
    /// List the cameras video can be sent from.
    Cameras {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Play the ring on the default audio output, to check the sound works.
    SoundCheck {
        /// How long to play, in seconds.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
    },
}

#[derive(Subcommand, Debug)]
pub enum AccountCmd {
    /// Create an account on a server, then log this device in. Password: $SIDECALL_PASSWORD or a prompt.
    Register(RegisterArgs),
    /// Log this device in. Password: $SIDECALL_PASSWORD or a prompt.
    Login(LoginArgs),
    /// Revoke this device's login on the server and forget it here.
    Logout,
    /// Show the saved login of this profile.
    Show,
}

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Server address, e.g. http://192.168.1.10:7480
    #[arg(long)]
    pub server: String,
    /// Your phone number (national numbers are read in --region).
    #[arg(long)]
    pub number: String,
    /// Two-letter country code national numbers are read in (default: the server's).
    #[arg(long)]
    pub region: Option<String>,
    /// This device's IP address as the other side should see it (default: the address of the
    /// interface that routes to the server).
    #[arg(long)]
    pub device_ip: Option<IpAddr>,
    /// A name for this device (default: the host name).
    #[arg(long)]
    pub device_name: Option<String>,
}

#[derive(Args, Debug)]
pub struct RegisterArgs {
    #[command(flatten)]
    pub login: LoginArgs,
    /// The name others see when you call.
    #[arg(long)]
    pub name: String,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

impl From<OnOff> for bool {
    fn from(v: OnOff) -> bool {
        matches!(v, OnOff::On)
    }
}

#[derive(Args, Debug)]
pub struct SettingsArgs {
    /// Take data sessions at all.
    #[arg(long)]
    pub accepting: Option<OnOff>,
    /// Do not disturb: callers get "unavailable".
    #[arg(long)]
    pub dnd: Option<OnOff>,
}

#[derive(Args, Debug)]
pub struct Output {
    /// Print events as JSON lines instead of text.
    #[arg(long)]
    pub json: bool,
    /// Give up if the server cannot be reached for this many seconds.
    #[arg(long, default_value_t = 15)]
    pub connect_timeout: u64,
}

#[derive(Args, Debug)]
pub struct DialArgs {
    /// The number you are calling, in any common format.
    pub number: String,
    /// Do not offer files.
    #[arg(long)]
    pub no_files: bool,
    /// Read a national NUMBER in this region (default: your own number's).
    #[arg(long)]
    pub region: Option<String>,
    /// End the session this many seconds after it is accepted (default: stay until it ends
    /// or Ctrl-C; with --send, until the files are delivered).
    #[arg(long)]
    pub hangup_after: Option<f64>,
    /// Send these files once the session is accepted, then hang up.
    #[arg(long, num_args = 1.., value_name = "FILE")]
    pub send: Vec<PathBuf>,
    /// Receive the files the other side sends into this folder (otherwise they are declined);
    /// with --send, hang up once both directions are done.
    #[arg(long, value_name = "DIR")]
    pub save_dir: Option<PathBuf>,
    #[command(flatten)]
    pub video: VideoArgs,
    #[command(flatten)]
    pub output: Output,
}

#[derive(Args, Clone, Debug)]
pub struct VideoArgs {
    /// Send video (and offer it when dialing): test-pattern, camera (the first one) or
    /// camera:N (see `sidecall cameras`).
    #[arg(long, value_name = "SOURCE", num_args = 0..=1, default_missing_value = "camera")]
    pub video: Option<VideoSource>,
    /// Size of the pictures sent.
    #[arg(long, value_name = "WxH", default_value = "1280x720")]
    pub video_size: Size,
    /// Pictures per second sent.
    #[arg(long, value_name = "FPS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=60))]
    pub video_fps: u32,
    /// Video bitrate in kbit/s (default: from size and frame rate).
    #[arg(long, value_name = "KBPS", value_parser = clap::value_parser!(u32).range(50..=20000))]
    pub video_bitrate: Option<u32>,
    /// Print video figures every second and when the session ends: pictures received,
    /// decoded, dropped, frames per second, latency, bitrate.
    #[arg(long)]
    pub video_stats: bool,
    /// Lose the video packets arriving this many seconds into the session (shows keyframe
    /// recovery).
    #[arg(long, value_name = "SECONDS", hide = true)]
    pub simulate_video_loss: Option<f64>,
}

impl VideoArgs {
    fn params(&self) -> Option<VideoParams> {
        self.video.clone().map(|source| VideoParams {
            source,
            size: self.video_size,
            fps: self.video_fps,
            bitrate: self.video_bitrate.unwrap_or(0) * 1000,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AcceptPolicy {
    /// Accept every request.
    All,
    /// Decline every request.
    None,
    /// Ask on the terminal (y/N) for each request.
    Ask,
}

#[derive(Args, Debug)]
pub struct ListenArgs {
    #[arg(long, value_enum, default_value_t = AcceptPolicy::Ask)]
    pub accept: AcceptPolicy,
    /// Stop after the first request is over (answered and ended, or missed).
    #[arg(long)]
    pub once: bool,
    /// End each accepted session after this many seconds.
    #[arg(long)]
    pub hangup_after: Option<f64>,
    /// Folder for received files (default: ~/Downloads/Sidecall). With --accept all, files
    /// are received without asking; with ask, each one is asked for.
    #[arg(long, value_name = "DIR")]
    pub save_dir: Option<PathBuf>,
    /// Send these files to every caller once the session's channel is open.
    #[arg(long, num_args = 1.., value_name = "FILE")]
    pub send: Vec<PathBuf>,
    #[command(flatten)]
    pub video: VideoArgs,
    #[command(flatten)]
    pub output: Output,
}

/// A problem that ends the command, with its exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: Exit,
    pub message: String,
}

fn fail(code: Exit, message: impl Into<String>) -> Failure {
    Failure { code, message: message.into() }
}

impl From<config::ConfigError> for Failure {
    fn from(e: config::ConfigError) -> Self {
        fail(Exit::Error, e.to_string())
    }
}

impl From<api::ApiError> for Failure {
    fn from(e: api::ApiError) -> Self {
        let code = match e.code() {
            Some(ErrorCode::InvalidNumber) => Exit::InvalidNumber,
            Some(ErrorCode::WrongCredentials) => Exit::LoginNeeded,
            _ => Exit::Error,
        };
        fail(code, e.to_string())
    }
}

/// Runs a parsed command line to its exit code.
pub async fn run(cli: Cli) -> Exit {
    let result = match &cli.command {
        Some(Command::Account(cmd)) => account(&cli, cmd).await,
        Some(Command::Settings(args)) => settings(&cli, args).await,
        Some(Command::Dial(args)) => dial(&cli, args).await,
        Some(Command::Listen(args)) => listen(&cli, args).await,
        Some(Command::Cameras { json }) => cameras(*json).await,
        Some(Command::SoundCheck { seconds }) => {
            let d = Duration::from_secs_f64(seconds.clamp(0.1, 30.0));
            match tokio::task::spawn_blocking(move || crate::media::ring::sound_check(d, 0.8)).await {
                Ok(Ok(device)) => {
                    println!("played the ring on {device}");
                    Ok(Exit::Ok)
                }
                Ok(Err(e)) => Err(fail(Exit::Error, format!("no sound: {e}"))),
                Err(e) => Err(fail(Exit::Error, format!("sound check failed: {e}"))),
            }
        }
        None => Err(fail(Exit::Usage, "no command given: run `sidecall` without one for the desktop app")),
    };
    match result {
        Ok(code) => code,
        Err(f) => {
            eprintln!("sidecall: {}", f.message);
            f.code
        }
    }
}

fn profile_path(cli: &Cli) -> Result<PathBuf, Failure> {
    let dir = match &cli.config_dir {
        Some(d) => d.clone(),
        None => config::config_dir()?,
    };
    Ok(config::profile_path(&dir, &cli.profile)?)
}

fn password(confirm: bool) -> Result<String, Failure> {
    if let Ok(p) = std::env::var("SIDECALL_PASSWORD") {
        return Ok(p);
    }
    if !std::io::stdin().is_terminal() {
        return Err(fail(Exit::Usage, "no password: set SIDECALL_PASSWORD or run in a terminal to be asked"));
    }
    let p = rpassword::prompt_password("Password: ")
        .map_err(|e| fail(Exit::Error, format!("cannot read the password: {e}")))?;
    if confirm {
        let again = rpassword::prompt_password("Password again: ")
            .map_err(|e| fail(Exit::Error, format!("cannot read the password: {e}")))?;
        if again != p {
            return Err(fail(Exit::Usage, "the passwords differ; nothing was changed"));
        }
    }
    Ok(p)
}

fn host_name() -> Option<String> {
    std::fs::read_to_string("/etc/hostname").ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

async fn do_login(cli: &Cli, args: &LoginArgs, password: String) -> Result<Exit, Failure> {
    let server = api::normalize_server_url(&args.server)?;
    let device_ip = args.device_ip.or_else(|| api::local_ip_towards(&server));
    let req = LoginRequest {
        number: args.number.clone(),
        password,
        region: args.region.clone(),
        device_ip,
        device_name: args.device_name.clone().or_else(host_name),
    };
    let resp = api::login(&server, &req).await?;
    let path = profile_path(cli)?;
    let profile = Profile {
        server,
        number: resp.number.clone(),
        display_name: resp.display_name.clone(),
        region: args.region.clone(),
        device_ip,
        token: Some(resp.token),
        device_id: Some(resp.device_id),
    };
    profile.save(&path)?;
    println!(
        "logged in as {} ({}) on device {}; the server sees this device at {}",
        resp.number, resp.display_name, resp.device_id, resp.observed_ip
    );
    Ok(Exit::Ok)
}

async fn account(cli: &Cli, cmd: &AccountCmd) -> Result<Exit, Failure> {
    match cmd {
        AccountCmd::Register(args) => {
            let server = api::normalize_server_url(&args.login.server)?;
            let password = password(true)?;
            let req = RegisterRequest {
                number: args.login.number.clone(),
                display_name: args.name.clone(),
                password: password.clone(),
                region: args.login.region.clone(),
            };
            let resp = api::register(&server, &req).await?;
            println!("registered {} ({})", resp.number, resp.display_name);
            do_login(cli, &args.login, password).await
        }
        AccountCmd::Login(args) => {
            let password = password(false)?;
            do_login(cli, args, password).await
        }
        AccountCmd::Logout => {
            let path = profile_path(cli)?;
            let Some(mut profile) = Profile::load(&path)? else {
                println!("not logged in");
                return Ok(Exit::Ok);
            };
            if let Some(token) = profile.token.take() {
                match api::logout(&profile.server, &token).await {
                    Ok(()) => {}
                    // Already revoked: forgetting it here is all that is left to do.
                    Err(e) if e.code() == Some(ErrorCode::AuthFailed) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            profile.device_id = None;
            profile.save(&path)?;
            println!("logged out");
            Ok(Exit::Ok)
        }
        AccountCmd::Show => {
            let path = profile_path(cli)?;
            match Profile::load(&path)? {
                Some(p) => {
                    println!("profile:   {}", cli.profile);
                    println!("server:    {}", p.server);
                    println!("number:    {}", p.number);
                    println!("name:      {}", p.display_name);
                    println!(
                        "device ip: {}",
                        p.device_ip.map(|i| i.to_string()).unwrap_or_else(|| "-".into())
                    );
                    println!("logged in: {}", if p.token.is_some() { "yes" } else { "no" });
                }
                None => println!("profile {} has no login: run `sidecall account login`", cli.profile),
            }
            Ok(Exit::Ok)
        }
    }
}

/// The core, connected: its handle and the rest of its events.
struct Online {
    handle: ClientHandle,
    events: mpsc::UnboundedReceiver<Event>,
    number: String,
    ice_servers: Vec<crate::protocol::IceServer>,
}

impl Online {
    /// Stops the core after it sent what was queued (an answer, a hang-up), waiting briefly.
    async fn close(mut self) {
        self.handle.shutdown();
        let stopped = async {
            while let Some(ev) = self.events.recv().await {
                if ev == Event::Stopped {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), stopped).await;
    }
}

async fn connect(cli: &Cli, output: &Output) -> Result<Online, Failure> {
    let path = profile_path(cli)?;
    let profile = Profile::load(&path)?.unwrap_or_default();
    let Some(token) = profile.token.clone() else {
        return Err(fail(
            Exit::LoginNeeded,
            format!(
                "profile {} is not logged in: run `sidecall account login --server URL --number NUMBER`",
                cli.profile
            ),
        ));
    };
    let mut cfg = ClientConfig::new(profile.server.clone(), token);
    cfg.device_ip = profile.device_ip;
    let (handle, mut events) = client::spawn(cfg, None);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(output.connect_timeout);
    let mut last_reason = String::from("no answer");
    loop {
        let ev = match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(ev)) => ev,
            Ok(None) => return Err(fail(Exit::Error, "the client stopped")),
            Err(_) => {
                handle.shutdown();
                return Err(fail(
                    Exit::Error,
                    format!(
                        "could not connect to {} within {} s: {last_reason}",
                        profile.server, output.connect_timeout
                    ),
                ));
            }
        };
        print_event(output, &ev);
        match ev {
            Event::Online { account, ice_servers, .. } => {
                return Ok(Online { handle, events, number: account.number, ice_servers });
            }
            Event::LoggedOut { reason } => {
                return Err(fail(Exit::LoginNeeded, format!("{reason}: run `sidecall account login` again")));
            }
            Event::Offline { reason, .. } => last_reason = reason,
            _ => {}
        }
    }
}

fn print_event(output: &Output, ev: &Event) {
    if output.json {
        if let Ok(line) = serde_json::to_string(ev) {
            println!("{line}");
        }
        return;
    }
    match ev {
        Event::Connecting { attempt } if *attempt > 1 => {
            eprintln!("reconnecting (attempt {attempt})…")
        }
        Event::Connecting { .. } => {}
        Event::Online { account, observed_ip, .. } => {
            eprintln!("online as {} ({}), seen at {observed_ip}", account.number, account.display_name)
        }
        Event::Offline { reason, retry_in_ms } => {
            eprintln!("offline: {reason}; retrying in {:.1} s", *retry_in_ms as f64 / 1000.0)
        }
        Event::LoggedOut { reason } => eprintln!("logged out: {reason}"),
        Event::Incoming { session_id, caller, offer, expires_in_ms, .. } => println!(
            "incoming {session_id} from {} ({}) offering {offer}, {} s to answer",
            caller.number,
            caller.display_name,
            expires_in_ms / 1000
        ),
        Event::IncomingClosed { session_id, reason } => {
            println!("closed {session_id}: {}", label(reason))
        }
        Event::DialPending { session_id, .. } => println!("ringing {session_id}"),
        Event::DialResult { outcome, .. } => match outcome {
            Outcome::InvalidNumber { reason } => println!("invalid number: {reason}"),
            other => println!("{}", other.label().replace('_', " ")),
        },
        Event::DialFailed { message, .. } => println!("failed: {message}"),
        Event::SessionStarted { session_id, role, peer, offer } => println!(
            "session {session_id} started ({}) with {} ({}) at {} (device reports {}), sharing {offer}",
            match role {
                Role::Caller => "you called",
                Role::Callee => "you accepted",
            },
            peer.number,
            peer.display_name,
            peer.observed_ip,
            peer.device_ip.map(|i| i.to_string()).unwrap_or_else(|| "nothing".into()),
        ),
        Event::Signal { .. } => {}
        Event::SessionEnded { session_id, reason } => {
            println!("session {session_id} ended: {}", label(reason))
        }
        Event::Settings { settings } => println!(
            "settings: taking sessions {}, do not disturb {}",
            if settings.accepting_sessions { "on" } else { "off" },
            if settings.do_not_disturb { "on" } else { "off" }
        ),
        Event::Blocked { numbers } if numbers.is_empty() => {}
        Event::Blocked { numbers } => eprintln!("blocked: {}", numbers.join(", ")),
        Event::Error { code, message, .. } => eprintln!("server refused: {message} ({code})"),
        Event::Stopped => {}
    }
}

fn label<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(|s| s.replace('_', " "))).unwrap_or_default()
}

async fn settings(cli: &Cli, args: &SettingsArgs) -> Result<Exit, Failure> {
    let output = Output { json: false, connect_timeout: 15 };
    let mut online = connect(cli, &output).await?;
    if args.accepting.is_none() && args.dnd.is_none() {
        // `Online` was printed by connect(); ask again to print the current values.
        online.handle.update_settings(None, None);
    } else {
        online.handle.update_settings(args.accepting.map(Into::into), args.dnd.map(Into::into));
    }
    let result = loop {
        match tokio::time::timeout(Duration::from_secs(10), online.events.recv()).await {
            Ok(Some(ev @ Event::Settings { .. })) => {
                print_event(&output, &ev);
                break Ok(Exit::Ok);
            }
            Ok(Some(Event::Error { message, .. })) => break Err(fail(Exit::Error, message)),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                break Err(fail(Exit::Error, "the server did not confirm the settings"));
            }
        }
    };
    online.close().await;
    result
}

fn outcome_exit(outcome: &Outcome) -> Exit {
    match outcome {
        Outcome::Accepted => Exit::Ok,
        Outcome::Declined => Exit::Declined,
        Outcome::TimedOut => Exit::TimedOut,
        Outcome::Unavailable => Exit::Unavailable,
        Outcome::InvalidNumber { .. } => Exit::InvalidNumber,
        Outcome::Cancelled => Exit::Cancelled,
    }
}

async fn sleep_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn cameras(json: bool) -> Result<Exit, Failure> {
    let found = tokio::task::spawn_blocking(crate::media::camera::list)
        .await
        .map_err(|e| fail(Exit::Error, format!("listing cameras failed: {e}")))?
        .map_err(|e| fail(Exit::Error, e))?;
    if json {
        println!("{}", serde_json::to_string(&found).unwrap_or_default());
    } else if found.is_empty() {
        eprintln!("{}", crate::media::camera::NO_CAMERA);
        eprintln!("(`--video test-pattern` sends the built-in test picture instead)");
    } else {
        for c in &found {
            println!("camera:{}  {}  {}", c.index, c.name, c.description);
        }
    }
    Ok(Exit::Ok)
}

/// Video figures on stdout, once a second and at the end of a session.
#[derive(Default)]
struct VideoStatsPrinter {
    last: Option<(std::time::Instant, u64, u64)>,
    first: Option<(std::time::Instant, u64, u64)>,
}

impl VideoStatsPrinter {
    fn show(&mut self, output: &Output, stats: &VideoStats, last: bool) {
        let now = std::time::Instant::now();
        let (bytes_in, bytes_out) =
            (stats.receiving.bytes, stats.sending.as_ref().map(|s| s.bytes_sent).unwrap_or(0));
        let first = *self.first.get_or_insert((now, bytes_in, bytes_out));
        // Once a second: since the last line; at the end: over the whole session.
        let (rate_in, rate_out) = match if last { Some(first) } else { self.last } {
            Some((t, i, o)) if now > t => {
                let s = (now - t).as_secs_f64();
                (bytes_in.saturating_sub(i) as f64 * 8.0 / s, bytes_out.saturating_sub(o) as f64 * 8.0 / s)
            }
            _ => (0.0, 0.0),
        };
        self.last = Some((now, bytes_in, bytes_out));
        if output.json {
            let line = serde_json::json!({
                "event": "video_stats",
                "final": last,
                "receiving": stats.receiving,
                "sending": stats.sending,
                "bitrate_in_bps": rate_in.round(),
                "bitrate_out_bps": rate_out.round(),
            });
            println!("{line}");
            return;
        }
        let r = &stats.receiving;
        let ms = |v: Option<f64>| v.map(|v| format!("{v:.0} ms")).unwrap_or_else(|| "-".into());
        let mut line = format!(
            "video{} in: {}x{} {:.1} fps, {} received, {} decoded, {} dropped, latency p50 {} p95 {}, {:.2} Mbit/s, keyframe requests {}",
            if last { " (session)" } else { "" },
            r.width,
            r.height,
            r.fps,
            r.frames_received,
            r.frames_decoded,
            r.frames_dropped,
            ms(r.latency_p50_ms),
            ms(r.latency_p95_ms),
            rate_in / 1e6,
            r.keyframe_requests_sent,
        );
        if let Some(s) = &stats.sending {
            line += &format!(
                " | out: {}x{} {} sent, {} dropped, {:.2} Mbit/s, encode {:.1} ms, keyframes {} ({} asked)",
                s.width,
                s.height,
                s.frames_sent,
                s.frames_dropped,
                rate_out / 1e6,
                s.encode_ms,
                s.keyframes_sent,
                s.keyframe_requests
            );
        }
        println!("{line}");
    }
}

/// The video side of `dial` and `listen`: figures once a second and at the end of each
/// session (`--video-stats`), and the simulated loss (`--simulate-video-loss`).
struct VideoWatch {
    stats: bool,
    tick: Option<tokio::time::Interval>,
    printer: VideoStatsPrinter,
    loss_after: Option<f64>,
    loss_at: Option<tokio::time::Instant>,
}

enum VideoDue {
    Figures,
    Loss,
}

impl VideoWatch {
    fn new(args: &VideoArgs) -> Self {
        VideoWatch {
            stats: args.video_stats,
            tick: args.video_stats.then(|| tokio::time::interval(Duration::from_secs(1))),
            printer: VideoStatsPrinter::default(),
            loss_after: args.simulate_video_loss,
            loss_at: None,
        }
    }

    /// A session's data side started: its figures and its loss timer start from now.
    fn session_started(&mut self) {
        self.printer = VideoStatsPrinter::default();
        self.loss_at =
            self.loss_after.map(|s| tokio::time::Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    }

    /// The session ended: its figures as a whole.
    fn session_ended(&mut self, output: &Output, data: &DataSession) {
        if self.stats {
            self.printer.show(output, &data.video_stats(), true);
        }
        self.loss_at = None;
    }

    /// The next thing to do; never, when there is nothing.
    async fn due(&mut self) -> VideoDue {
        let tick = async {
            match self.tick.as_mut() {
                Some(t) => t.tick().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tick => VideoDue::Figures,
            _ = sleep_opt(self.loss_at) => VideoDue::Loss,
        }
    }

    fn act(&mut self, due: VideoDue, output: &Output, data: Option<&DataSession>) {
        let Some(d) = data else { return };
        match due {
            VideoDue::Figures => self.printer.show(output, &d.video_stats(), false),
            VideoDue::Loss => {
                self.loss_at = None;
                d.simulate_video_loss(8);
            }
        }
    }
}

async fn dial(cli: &Cli, args: &DialArgs) -> Result<Exit, Failure> {
    for f in &args.send {
        match std::fs::metadata(f) {
            Ok(m) if m.is_file() => {}
            Ok(_) => {
                return Err(fail(Exit::Usage, format!("cannot send {}: not a regular file", f.display())));
            }
            Err(e) => return Err(fail(Exit::Usage, format!("cannot send {}: {e}", f.display()))),
        }
    }
    let mut online = connect(cli, &args.output).await?;
    let offer = Offer { files: !args.no_files || !args.send.is_empty(), video: args.video.video.is_some() };
    let req = online.handle.dial_with(&args.number, offer, args.region.clone(), None);
    let mut session: Option<SessionId> = None;
    let mut accepted = false;
    let mut hangup_at: Option<tokio::time::Instant> = None;
    let mut interrupted = false;
    let (data_tx, mut data_rx) = mpsc::unbounded_channel();
    let mut data: Option<DataSession> = None;
    let mut progress = ProgressPrinter::default();
    let mut left = args.send.len();
    let mut undelivered = 0usize;
    // Files the peer is sending us that are not finished yet.
    let mut receiving = 0usize;
    let mut video = VideoWatch::new(&args.video);
    let code = loop {
        tokio::select! {
            ev = online.events.recv() => {
                let Some(ev) = ev else { break Exit::Error };
                print_event(&args.output, &ev);
                match ev {
                    Event::DialPending { req_id, session_id } if req_id == req => session = Some(session_id),
                    Event::DialResult { req_id, outcome, session_id } if req_id == req => {
                        if outcome != Outcome::Accepted {
                            break outcome_exit(&outcome);
                        }
                        accepted = true;
                        session = session_id.or(session);
                    }
                    Event::DialFailed { req_id, code, message: _ } if req_id == req => {
                        break match code {
                            Some(ErrorCode::SelfRequest | ErrorCode::InvalidNumber) => Exit::InvalidNumber,
                            _ => Exit::Error,
                        };
                    }
                    Event::SessionStarted { session_id, .. } if Some(&session_id) == session.as_ref() => {
                        hangup_at = args.hangup_after.map(|s| tokio::time::Instant::now() + Duration::from_secs_f64(s.max(0.0)));
                        let receive = ReceiveConfig {
                            dir: args.save_dir.clone().unwrap_or_else(transfer::default_save_dir),
                            auto_accept: args.save_dir.is_some(),
                        };
                        data = Some(start_data(&online, session_id, Role::Caller, receive, &args.send, &args.video, &data_tx));
                        video.session_started();
                    }
                    Event::Signal { session_id, data: s } => {
                        if let Some(d) = data.as_ref().filter(|d| d.session_id == session_id) {
                            d.signal(s);
                        }
                    }
                    Event::SessionEnded { session_id, .. } if Some(&session_id) == session.as_ref() => {
                        if let Some(d) = &data {
                            video.session_ended(&args.output, d);
                        }
                        if left > 0 {
                            eprintln!("the session ended before {left} file(s) were delivered");
                            break Exit::Error;
                        }
                        break if !accepted || undelivered > 0 { Exit::Error } else { Exit::Ok };
                    }
                    Event::LoggedOut { .. } => break Exit::LoginNeeded,
                    _ => {}
                }
            }
            Some(dev) = data_rx.recv() => {
                progress.show(&args.output, &dev);
                match dev {
                    DataEvent::Transfer(TransferEvent::Incoming { id, name, .. }) => {
                        if args.save_dir.is_some() {
                            receiving += 1;
                        } else {
                            eprintln!("declined the peer's file {name}: give --save-dir to receive files");
                            if let Some(d) = &data { d.reject_file(id); }
                        }
                    }
                    DataEvent::Transfer(
                        TransferEvent::Completed { way: Way::Receiving, .. }
                        | TransferEvent::Failed { way: Way::Receiving, .. }
                        | TransferEvent::Cancelled { way: Way::Receiving, .. },
                    ) => {
                        receiving = receiving.saturating_sub(1);
                        if receiving == 0 && left == 0 && !args.send.is_empty() && hangup_at.is_none() {
                            if let Some(id) = &session { online.handle.end(id); }
                        }
                    }
                    DataEvent::Transfer(
                        TransferEvent::Completed { way: Way::Sending, .. }
                        | TransferEvent::Failed { way: Way::Sending, .. }
                        | TransferEvent::Rejected { way: Way::Sending, .. }
                        | TransferEvent::Cancelled { way: Way::Sending, .. },
                    ) => {
                        if !matches!(dev, DataEvent::Transfer(TransferEvent::Completed { .. })) {
                            undelivered += 1;
                        }
                        left = left.saturating_sub(1);
                        if left == 0 && receiving == 0 && !args.send.is_empty() && hangup_at.is_none() {
                            if let Some(id) = &session { online.handle.end(id); }
                        }
                    }
                    DataEvent::Failed(why) if left > 0 => {
                        eprintln!("the peer-to-peer connection failed: {why}");
                        if let Some(id) = &session { online.handle.end(id); }
                        undelivered += left;
                        left = 0;
                    }
                    _ => {}
                }
            }
            _ = sleep_opt(hangup_at) => {
                hangup_at = None;
                if let Some(id) = &session { online.handle.end(id); }
            }
            due = video.due() => video.act(due, &args.output, data.as_ref()),
            _ = tokio::signal::ctrl_c(), if !interrupted => {
                interrupted = true;
                match &session {
                    // Cancel or hang up, then wait for the server to confirm.
                    Some(id) => online.handle.end(id),
                    None => break Exit::Cancelled,
                }
            }
        }
    };
    drop(data);
    drain_data_events(&mut data_rx, &mut progress, &args.output).await;
    online.close().await;
    Ok(code)
}

/// Transfer progress on stderr (or JSON lines on stdout), at most once a second per file.
#[derive(Default)]
struct ProgressPrinter {
    last: std::collections::HashMap<(u32, bool), (std::time::Instant, u64)>,
}

impl ProgressPrinter {
    fn show(&mut self, output: &Output, ev: &DataEvent) {
        if output.json {
            let line = match ev {
                DataEvent::ChannelOpen { open_ms } => {
                    serde_json::json!({"event": "channel_open", "open_ms": open_ms})
                }
                DataEvent::Transfer(t) => serde_json::json!({"event": "transfer", "transfer": t}),
                DataEvent::Failed(why) => serde_json::json!({"event": "data_failed", "reason": why}),
                DataEvent::Video(v) => {
                    let mut line = serde_json::to_value(v).unwrap_or_default();
                    if let Some(o) = line.as_object_mut() {
                        o.insert("event".into(), "video".into());
                    }
                    line
                }
            };
            println!("{line}");
            return;
        }
        let mb = |b: u64| b as f64 / 1_000_000.0;
        match ev {
            DataEvent::ChannelOpen { open_ms } => eprintln!("peer-to-peer channel open ({open_ms} ms)"),
            DataEvent::Failed(why) => eprintln!("peer-to-peer connection: {why}"),
            DataEvent::Video(v) => match v {
                VideoEvent::SendingStarted { what } => eprintln!("sending video: {what}"),
                VideoEvent::SendingStopped => eprintln!("stopped sending video"),
                VideoEvent::SendingFailed { reason } => {
                    eprintln!("no video sent: {reason}");
                    if reason.contains("camera") {
                        eprintln!("(`--video test-pattern` sends the built-in test picture instead)");
                    }
                }
                VideoEvent::RemoteStarted => eprintln!("the other side's video started"),
                VideoEvent::RemoteStopped => eprintln!("the other side's video stopped"),
            },
            DataEvent::Transfer(t) => match t {
                TransferEvent::Preparing { name, size } => {
                    eprintln!("checking {name} ({:.1} MB)…", mb(*size))
                }
                TransferEvent::Offered { name, .. } => eprintln!("offered {name}"),
                TransferEvent::Incoming { name, size, .. } => {
                    println!("incoming file {name} ({:.1} MB)", mb(*size))
                }
                TransferEvent::Started { id, way, name, offset, .. } => {
                    self.last.insert((*id, *way == Way::Sending), (std::time::Instant::now(), *offset));
                    let verb = if *way == Way::Sending { "sending" } else { "receiving" };
                    if *offset > 0 {
                        eprintln!("{verb} {name}, resuming at {:.1} MB", mb(*offset));
                    } else {
                        eprintln!("{verb} {name}");
                    }
                }
                TransferEvent::Progress { id, way, bytes, size } if *size >= 1_000_000 => {
                    let key = (*id, *way == Way::Sending);
                    let now = std::time::Instant::now();
                    let (t0, b0) = *self.last.get(&key).unwrap_or(&(now, 0));
                    if now.duration_since(t0) >= Duration::from_secs(1) {
                        let speed = mb(bytes.saturating_sub(b0)) / now.duration_since(t0).as_secs_f64();
                        let pct = if *size == 0 { 100.0 } else { *bytes as f64 * 100.0 / *size as f64 };
                        eprintln!("  {pct:5.1}%  {:.1} of {:.1} MB  {speed:.1} MB/s", mb(*bytes), mb(*size));
                        self.last.insert(key, (now, *bytes));
                    }
                }
                TransferEvent::Progress { .. } => {}
                TransferEvent::Completed { way: Way::Sending, name, size, .. } => {
                    println!("sent {name} ({:.1} MB, verified by the receiver)", mb(*size))
                }
                TransferEvent::Completed { name, path, size, .. } => println!(
                    "received {name} ({:.1} MB, verified) -> {}",
                    mb(*size),
                    path.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
                ),
                TransferEvent::Failed { name, reason, .. } => println!("failed {name}: {reason}"),
                TransferEvent::Rejected { name, reason, .. } => println!("rejected {name}: {reason}"),
                TransferEvent::Cancelled { name, reason, .. } => println!("cancelled {name}: {reason}"),
                TransferEvent::ChannelClosed => {}
            },
        }
    }
}

/// Lines typed on the terminal, read on their own thread (stdin blocks).
fn stdin_lines() -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Something waiting for a y/n on the terminal.
enum Ask {
    Session(SessionId),
    File(u32),
}

async fn listen(cli: &Cli, args: &ListenArgs) -> Result<Exit, Failure> {
    let save_dir = args.save_dir.clone().unwrap_or_else(transfer::default_save_dir);
    let mut online = connect(cli, &args.output).await?;
    if !args.output.json {
        println!(
            "listening as {} (accept: {:?}; files go to {}); Ctrl-C to stop",
            online.number,
            args.accept,
            save_dir.display()
        );
    }
    let mut lines = if args.accept == AcceptPolicy::Ask { Some(stdin_lines()) } else { None };
    // Questions waiting for a y/n on the terminal, oldest first.
    let mut asking: Vec<Ask> = Vec::new();
    let mut hangups: Vec<(tokio::time::Instant, SessionId)> = Vec::new();
    let (data_tx, mut data_rx) = mpsc::unbounded_channel();
    let mut data: Option<DataSession> = None;
    let mut progress = ProgressPrinter::default();
    let mut video = VideoWatch::new(&args.video);
    let code = loop {
        let next_hangup = hangups.iter().map(|(t, _)| *t).min();
        tokio::select! {
            ev = online.events.recv() => {
                let Some(ev) = ev else { break Exit::Error };
                print_event(&args.output, &ev);
                match ev {
                    Event::Incoming { session_id, .. } => match args.accept {
                        AcceptPolicy::All => online.handle.answer(&session_id, true),
                        AcceptPolicy::None => {
                            online.handle.answer(&session_id, false);
                            if args.once { break Exit::Ok; }
                        }
                        AcceptPolicy::Ask => {
                            eprintln!("accept {session_id}? [y/N]");
                            asking.push(Ask::Session(session_id));
                        }
                    },
                    Event::IncomingClosed { session_id, .. } => {
                        asking.retain(|a| !matches!(a, Ask::Session(s) if *s == session_id));
                        if args.once { break Exit::Ok; }
                    }
                    Event::SessionStarted { session_id, role, .. } => {
                        if let Some(s) = args.hangup_after {
                            hangups.push((tokio::time::Instant::now() + Duration::from_secs_f64(s.max(0.0)), session_id.clone()));
                        }
                        let receive = ReceiveConfig { dir: save_dir.clone(), auto_accept: args.accept == AcceptPolicy::All };
                        data = Some(start_data(&online, session_id, role, receive, &args.send, &args.video, &data_tx));
                        video.session_started();
                    }
                    Event::Signal { session_id, data: s } => {
                        if let Some(d) = data.as_ref().filter(|d| d.session_id == session_id) {
                            d.signal(s);
                        }
                    }
                    Event::SessionEnded { session_id, .. } => {
                        hangups.retain(|(_, s)| *s != session_id);
                        if let Some(d) = data.take_if(|d| d.session_id == session_id) {
                            video.session_ended(&args.output, &d);
                        }
                        if args.once { break Exit::Ok; }
                    }
                    Event::LoggedOut { .. } => break Exit::LoginNeeded,
                    _ => {}
                }
            }
            Some(dev) = data_rx.recv() => {
                progress.show(&args.output, &dev);
                if let DataEvent::Transfer(TransferEvent::Incoming { id, name, .. }) = &dev
                    && args.accept == AcceptPolicy::Ask
                {
                    eprintln!("receive {name}? [y/N]");
                    asking.push(Ask::File(*id));
                }
            }
            line = async { match lines.as_mut() { Some(l) => l.recv().await, None => std::future::pending().await } } => {
                let Some(line) = line else { lines = None; continue };
                if asking.is_empty() { continue; }
                let yes = matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes");
                match asking.remove(0) {
                    Ask::Session(id) => {
                        online.handle.answer(&id, yes);
                        if !yes && args.once { break Exit::Ok; }
                    }
                    Ask::File(id) => {
                        if let Some(d) = &data {
                            if yes { d.accept_file(id) } else { d.reject_file(id) }
                        }
                    }
                }
            }
            _ = sleep_opt(next_hangup) => {
                let now = tokio::time::Instant::now();
                for (_, id) in hangups.iter().filter(|(t, _)| *t <= now) {
                    online.handle.end(id);
                }
                hangups.retain(|(t, _)| *t > now);
            }
            due = video.due() => video.act(due, &args.output, data.as_ref()),
            _ = tokio::signal::ctrl_c() => break Exit::Ok,
        }
    };
    drop(data);
    drain_data_events(&mut data_rx, &mut progress, &args.output).await;
    online.close().await;
    Ok(code)
}

/// Starts the peer-to-peer side of an accepted session and offers `send`.
fn start_data(
    online: &Online,
    session_id: SessionId,
    role: Role,
    receive: ReceiveConfig,
    send: &[PathBuf],
    video: &VideoArgs,
    tx: &mpsc::UnboundedSender<DataEvent>,
) -> DataSession {
    let cfg = DataConfig {
        role,
        ice_servers: online.ice_servers.clone(),
        receive,
        loopback: session::loopback_from_env(),
        video: video.params(),
        display: VideoDisplay::default(),
    };
    let d = DataSession::start(online.handle.clone(), session_id, cfg, tx.clone());
    if !send.is_empty() {
        d.send_files(send.to_vec());
    }
    d
}

/// Reports what the transfer engine still had to say (a failure that raced the hang-up).
async fn drain_data_events(
    rx: &mut mpsc::UnboundedReceiver<DataEvent>,
    progress: &mut ProgressPrinter,
    output: &Output,
) {
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
        progress.show(output, &ev);
    }
}
