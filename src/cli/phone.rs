//! `sidecall listen --fritz HOST`: the FRITZ!Box call monitor beside the listener, to tell
//! whether a request belongs to the call ringing on this user's phone (and to accept
//! automatically only those).

use super::Output;
use crate::calls::linked::{CallMatch, RecentCalls, sees_incoming};
use crate::calls::{CallEvent, Emitter, Source, WatcherEvent, WatcherStatus};
use crate::protocol::SessionId;
use std::time::Instant;
use tokio::sync::mpsc;

pub(super) struct PhoneLine {
    events: Option<mpsc::UnboundedReceiver<WatcherEvent>>,
    status: Vec<(Source, WatcherStatus)>,
    recent: RecentCalls,
    region: String,
    area: Option<String>,
    /// Requests of callers accepted automatically that no call vouched for yet.
    waiting: Vec<(SessionId, String)>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl PhoneLine {
    /// Watches the call monitor at `fritz` (`host` or `host:port`), if given.
    pub(super) fn start(fritz: Option<&str>, region: String, area: Option<String>) -> PhoneLine {
        let (events, task) = match fritz {
            Some(host) => {
                let addr = if host.contains(':') { host.to_string() } else { format!("{host}:1012") };
                let (tx, rx) = mpsc::unbounded_channel();
                let task = tokio::spawn(crate::calls::fritz::run(addr, Emitter::new(Source::Fritz, tx)));
                (Some(rx), Some(task))
            }
            None => (None, None),
        };
        PhoneLine {
            events,
            status: Vec::new(),
            recent: RecentCalls::default(),
            region,
            area,
            waiting: Vec::new(),
            task,
        }
    }

    /// The next thing the phone line reports (never, without a watcher).
    pub(super) async fn next(&mut self) -> Option<WatcherEvent> {
        match self.events.as_mut() {
            Some(rx) => rx.recv().await,
            None => std::future::pending().await,
        }
    }

    /// What the phone says about a request from `number` (`None`: no watcher works).
    pub(super) fn check(&self, number: &str) -> Option<CallMatch> {
        sees_incoming(&self.status).then(|| self.recent.check(number, Instant::now()))
    }

    /// A request accepted automatically once a call from `number` rings.
    pub(super) fn wait_for_call(&mut self, session_id: SessionId, number: String) {
        self.waiting.push((session_id, number));
    }

    pub(super) fn forget(&mut self, session_id: &SessionId) {
        self.waiting.retain(|(s, _)| s != session_id);
    }

    /// Notes a watcher event; returns the waiting requests a call now vouches for.
    pub(super) fn observe(&mut self, ev: WatcherEvent, output: &Output) -> Vec<SessionId> {
        match ev {
            WatcherEvent::Status(src, st) => {
                if !output.json {
                    match &st {
                        WatcherStatus::Connected => eprintln!("watching the FRITZ!Box call monitor"),
                        WatcherStatus::Retrying { reason, .. } => eprintln!("call monitor: {reason}"),
                        _ => {}
                    }
                }
                self.status.retain(|(s, _)| *s != src);
                self.status.push((src, st));
                Vec::new()
            }
            WatcherEvent::Call(_, call) => {
                self.recent.observe(&call, Instant::now(), &self.region, self.area.as_deref());
                if !matches!(call, CallEvent::Incoming { .. }) {
                    return Vec::new();
                }
                let now = Instant::now();
                let (ready, still): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
                    .into_iter()
                    .partition(|(_, n)| self.recent.check(n, now) == CallMatch::Matches);
                self.waiting = still;
                for (s, _) in &ready {
                    print_match(output, s, Some(CallMatch::Matches));
                }
                ready.into_iter().map(|(s, _)| s).collect()
            }
        }
    }
}

impl Drop for PhoneLine {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// The phone line's word on a request, in text or as a JSON line.
pub(super) fn print_match(output: &Output, session_id: &SessionId, m: Option<CallMatch>) {
    let Some(m) = m else { return };
    if output.json {
        let line = serde_json::json!({"event": "call_match", "session_id": session_id, "call_match": m});
        println!("{line}");
    } else {
        println!("{session_id}: {}", m.describe().to_lowercase());
    }
}
