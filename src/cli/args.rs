//! The command line's words.

use crate::media::video::{Size, VideoParams, VideoSource};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::IpAddr;
use std::path::PathBuf;

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
    /// Open the app hidden in the tray (as when it starts at login).
    #[arg(long)]
    pub minimized: bool,
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
    /// Place the phone call to NUMBER through the server's PBX (your phone rings first), and
    /// start the data session once they answer; then like `dial`.
    Call(DialArgs),
    /// Stay online and answer incoming requests.
    Listen(ListenArgs),
    /// The call watchers without a window (FRITZ!Box, Asterisk, desk-phone action URLs), as
    /// the app sets them up (this profile's settings): each call and watcher status printed;
    /// sessions requested by themselves when the settings say so, and ended with the call.
    Watch(WatchArgs),
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
    /// Finish a registration with the code the server sent (the phone number calling you ends
    /// in it, or it came by SMS), then log this device in. Password: as for register.
    Verify(VerifyArgs),
    /// Log this device in. Password: $SIDECALL_PASSWORD or a prompt.
    Login(LoginArgs),
    /// Revoke this device's login on the server and forget it here.
    Logout,
    /// Show the saved login of this profile.
    Show,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Watch this FRITZ!Box's call monitor (HOST or HOST:PORT), and save it in the settings.
    #[arg(long, value_name = "HOST")]
    pub fritz: Option<String>,
    /// When the phone dials: request the session (automatic) or not (off); saved.
    #[arg(long, value_name = "automatic|off")]
    pub on_call: Option<String>,
    /// Your area code, for numbers dialed without it (e.g. 030); saved.
    #[arg(long)]
    pub area_code: Option<String>,
    /// Print JSON lines instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub login: LoginArgs,
    /// The registration's id, as `account register` printed it.
    #[arg(long)]
    pub id: String,
    /// The code (without it: wait until an administrator approved the registration).
    pub code: Option<String>,
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
    /// Trust the server's self-signed certificate with this SHA-256 fingerprint (the server
    /// prints it at start); without it you are asked, in a terminal.
    #[arg(long)]
    pub trust_fingerprint: Option<String>,
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
    /// Hide my address: every session goes through the server's relay, and neither side
    /// learns the other's address.
    #[arg(long)]
    pub hide_address: Option<OnOff>,
    /// Your phone's extension on the server's PBX, for `sidecall call` ("none" clears it).
    #[arg(long, value_name = "EXT")]
    pub extension: Option<String>,
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
    pub(crate) fn params(&self) -> Option<VideoParams> {
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
    /// Watch this FRITZ!Box's call monitor (HOST or HOST:PORT, port 1012): each request says
    /// whether it matches the call ringing on your phone, and `--accept all` accepts only
    /// those (the others once their call rings).
    #[arg(long, value_name = "HOST")]
    pub fritz: Option<String>,
    /// Your area code, for callers the box reports without it (e.g. 030).
    #[arg(long)]
    pub area_code: Option<String>,
    #[command(flatten)]
    pub video: VideoArgs,
    #[command(flatten)]
    pub output: Output,
}
