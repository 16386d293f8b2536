//! The call watchers the settings ask for, started and restarted as one group.

use super::settings::{AppSettings, with_port};
use crate::calls::{self, Emitter, Source, WatcherEvent, WatcherStatus};
use std::net::{IpAddr, SocketAddr};
use tokio::sync::mpsc;

/// The running watchers; dropping it stops them all.
#[derive(Default)]
pub struct Watchers {
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for Watchers {
    fn drop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

fn ami_config(s: &AppSettings) -> calls::ami::AmiConfig {
    calls::ami::AmiConfig {
        addr: with_port(&s.ami.host, 5038),
        username: s.ami.username.clone(),
        secret: s.ami.secret.clone(),
        extension: s.ami.extension.trim().to_string(),
    }
}

/// Starts the watchers `s` enables, and the `tel:` link socket of `profile`, on the current
/// runtime; their events go to `tx`. A watcher that cannot start says so as an event.
pub fn start(s: &AppSettings, profile: &str, tx: mpsc::UnboundedSender<WatcherEvent>) -> Watchers {
    let mut w = Watchers::default();
    let mut spawn = |f: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>| {
        w.tasks.push(tokio::spawn(f).abort_handle());
    };
    if s.fritz.enabled && !s.fritz.host.trim().is_empty() {
        let em = Emitter::new(Source::Fritz, tx.clone());
        spawn(Box::pin(calls::fritz::run(with_port(&s.fritz.host, 1012), em)));
    }
    if s.ami.enabled && !s.ami.host.trim().is_empty() {
        spawn(Box::pin(calls::ami::run(ami_config(s), Emitter::new(Source::Ami, tx.clone()))));
    }
    if s.phone.enabled {
        match (s.phone.listen.trim().parse::<SocketAddr>(), s.phone.phone_ip.trim().parse::<IpAddr>()) {
            (Ok(listen), Ok(phone)) => {
                let em = Emitter::new(Source::Phone, tx.clone());
                spawn(Box::pin(calls::action_url::run(listen, phone, em)));
            }
            _ => {
                let reason = "set the listen address and the phone's IP address".to_string();
                let _ = tx.send(WatcherEvent::Status(Source::Phone, WatcherStatus::Failed { reason }));
            }
        }
    }
    let path = calls::tel::socket_path(profile);
    spawn(Box::pin(calls::tel::serve(path, Emitter::new(Source::Tel, tx))));
    w
}

/// Tries `source`'s connection with `s` once; the sentence says how it went.
pub async fn test(source: Source, s: &AppSettings) -> String {
    let result = match source {
        Source::Fritz => calls::fritz::probe(&with_port(&s.fritz.host, 1012)).await,
        Source::Ami => calls::ami::probe(&ami_config(s)).await,
        Source::Phone | Source::Tel => Ok(()),
    };
    match result {
        Ok(()) => format!("{}: connection works.", source.label()),
        Err(e) => format!("{}: {e}", source.label()),
    }
}
