//! Connecting the client core for a command, and printing its events.

use super::{Cli, Exit, Failure, Output, fail, label, profile_path};
use crate::client::config::Profile;
use crate::client::session::{self, DataEvent};
use crate::client::{self, ClientConfig, ClientHandle, Event, SessionController};
use crate::protocol::{Outcome, Role};
use std::time::Duration;
use tokio::sync::mpsc;

/// The core, connected: its handle and the rest of its events.
/// The core, connected: its handle and the rest of its events.
pub(super) struct Online {
    pub handle: ClientHandle,
    pub events: mpsc::UnboundedReceiver<Event>,
    pub number: String,
    pub ice_servers: Vec<crate::protocol::IceServer>,
    /// The server can place phone calls (`sidecall call`).
    pub can_place_calls: bool,
}

impl Online {
    /// The controller of this connection's data sessions (their events go to `events`).
    pub fn sessions(&self, events: mpsc::UnboundedSender<DataEvent>) -> SessionController {
        SessionController::new(self.handle.clone(), session::loopback_from_env(), events)
            .with_ice_servers(self.ice_servers.clone())
    }

    /// Stops the core after it sent what was queued (an answer, a hang-up), waiting briefly.
    pub async fn close(mut self) {
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

pub(super) async fn connect(cli: &Cli, output: &Output) -> Result<Online, Failure> {
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
    cfg.trust = profile.trust();
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
            Event::Online { account, ice_servers, can_place_calls, .. } => {
                return Ok(Online { handle, events, number: account.number, ice_servers, can_place_calls });
            }
            Event::LoggedOut { reason } => {
                return Err(fail(Exit::LoginNeeded, format!("{reason}: run `sidecall account login` again")));
            }
            Event::Offline { reason, .. } => last_reason = reason,
            _ => {}
        }
    }
}

pub(super) fn print_event(output: &Output, ev: &Event) {
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
            "incoming {session_id} from {} ({}, {}) offering {offer}, {} s to answer",
            caller.number,
            caller.display_name,
            if caller.verified { "number verified" } else { "number not verified" },
            expires_in_ms / 1000
        ),
        Event::IncomingClosed { session_id, reason } => {
            println!("closed {session_id}: {}", label(reason))
        }
        Event::DialPending { session_id, .. } => println!("ringing {session_id}"),
        Event::CallProgress { stage, .. } => println!(
            "{}",
            match stage {
                crate::protocol::CallStage::CallingYou => "calling your phone: pick it up",
                crate::protocol::CallStage::Dialing => "dialing",
                crate::protocol::CallStage::Answered => "answered",
            }
        ),
        Event::Extension { extension } => {
            println!("extension: {}", extension.as_deref().unwrap_or("none"))
        }
        Event::DialResult { outcome, .. } => match outcome {
            Outcome::InvalidNumber { reason } => println!("invalid number: {reason}"),
            Outcome::CallFailed { reason } => println!("call failed: {}", reason.describe()),
            other => println!("{}", other.label().replace('_', " ")),
        },
        Event::DialFailed { message, .. } => println!("failed: {message}"),
        Event::SessionStarted { session_id, role, peer, offer, relayed } => println!(
            "session {session_id} started ({}) with {} ({}) {}, sharing {offer}",
            match role {
                Role::Caller => "you called",
                Role::Callee => "you accepted",
            },
            peer.number,
            peer.display_name,
            match (relayed, peer.observed_ip) {
                (false, Some(ip)) => format!(
                    "at {ip} (device reports {})",
                    peer.device_ip.map(|i| i.to_string()).unwrap_or_else(|| "nothing".into())
                ),
                _ => "through the server's relay (addresses hidden)".to_string(),
            },
        ),
        Event::Signal { .. } | Event::IceServers { .. } => {}
        Event::SessionEnded { session_id, reason } => {
            println!("session {session_id} ended: {}", label(reason))
        }
        Event::Settings { settings } => println!(
            "settings: taking sessions {}, do not disturb {}, hide my address {}",
            if settings.accepting_sessions { "on" } else { "off" },
            if settings.do_not_disturb { "on" } else { "off" },
            if settings.hide_address { "on" } else { "off" }
        ),
        Event::Blocked { numbers } if numbers.is_empty() => {}
        Event::Blocked { numbers } => eprintln!("blocked: {}", numbers.join(", ")),
        Event::Error { code, message, .. } => eprintln!("server refused: {message} ({code})"),
        Event::Stopped => {}
    }
}
