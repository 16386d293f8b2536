//! The headless command line of `sidecall`: accounts, dialing and listening, for scripts
//! and tests. Human-readable lines on stdout (or JSON lines with `--json`), progress and
//! problems on stderr, outcomes in the exit code. One module per command.

mod account;
mod args;
mod cameras;
mod dial;
mod listen;
mod online;
mod phone;
mod progress;
mod settings;
mod video;
mod watch;

pub use args::*;

use crate::client::{api, config};
use crate::protocol::{ErrorCode, Outcome};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

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
    /// `sidecall call`: the phone call did not come about (the message says why).
    CallFailed = 9,
    /// `sidecall account register`/`verify`: the number still waits for its code (or the
    /// code expired: register again).
    VerificationNeeded = 10,
}

/// A problem that ends the command, with its exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: Exit,
    pub message: String,
}

pub(crate) fn fail(code: Exit, message: impl Into<String>) -> Failure {
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
        Some(Command::Account(cmd)) => account::account(&cli, cmd).await,
        Some(Command::Settings(args)) => settings::settings(&cli, args).await,
        Some(Command::Dial(args)) => dial::dial(&cli, args, false).await,
        Some(Command::Call(args)) => dial::dial(&cli, args, true).await,
        Some(Command::Listen(args)) => listen::listen(&cli, args).await,
        Some(Command::Watch(args)) => watch::watch(&cli, args).await,
        Some(Command::Cameras { json }) => cameras::cameras(*json).await,
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

pub(crate) fn profile_path(cli: &Cli) -> Result<PathBuf, Failure> {
    let dir = match &cli.config_dir {
        Some(d) => d.clone(),
        None => config::config_dir()?,
    };
    Ok(config::profile_path(&dir, &cli.profile)?)
}

pub(crate) fn password(confirm: bool) -> Result<String, Failure> {
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

pub(crate) fn label<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(|s| s.replace('_', " "))).unwrap_or_default()
}

pub(crate) fn outcome_exit(outcome: &Outcome) -> Exit {
    match outcome {
        Outcome::Accepted => Exit::Ok,
        Outcome::Declined => Exit::Declined,
        Outcome::TimedOut => Exit::TimedOut,
        Outcome::Unavailable => Exit::Unavailable,
        Outcome::InvalidNumber { .. } => Exit::InvalidNumber,
        Outcome::Cancelled => Exit::Cancelled,
        Outcome::CallFailed { .. } => Exit::CallFailed,
    }
}

pub(crate) async fn sleep_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
