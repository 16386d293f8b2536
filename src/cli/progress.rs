//! Transfer and connection progress of `dial` and `listen`.

use super::Output;
use crate::client::session::{DataEvent, VideoEvent};
use crate::client::transfer::{TransferEvent, Way};
use std::time::Duration;
use tokio::sync::mpsc;

/// Transfer progress on stderr (or JSON lines on stdout), at most once a second per file.
#[derive(Default)]
pub(super) struct ProgressPrinter {
    last: std::collections::HashMap<(u32, bool), (std::time::Instant, u64)>,
}

impl ProgressPrinter {
    pub(super) fn show(&mut self, output: &Output, ev: &DataEvent) {
        if output.json {
            let line = match ev {
                DataEvent::ChannelOpen { open_ms, path } => {
                    serde_json::json!({"event": "channel_open", "open_ms": open_ms, "path": path})
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
            DataEvent::ChannelOpen { open_ms, path } => eprintln!(
                "peer-to-peer channel open ({open_ms} ms, {})",
                match path {
                    Some(crate::rtc::Path::Direct) => "direct",
                    Some(crate::rtc::Path::Relayed) => "relayed by the server",
                    None => "path unknown",
                }
            ),
            DataEvent::Failed(why) => eprintln!("peer-to-peer connection: {why}"),
            DataEvent::Video(v) => match v {
                VideoEvent::SendingStarted { what } => eprintln!("sending video: {what}"),
                VideoEvent::SendingStopped => eprintln!("stopped sending video"),
                VideoEvent::SendingFailed { reason, camera } => {
                    eprintln!("no video sent: {reason}");
                    if *camera {
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

/// Reports what the transfer engine still had to say (a failure that raced the hang-up).
pub(super) async fn drain_data_events(
    rx: &mut mpsc::UnboundedReceiver<DataEvent>,
    progress: &mut ProgressPrinter,
    output: &Output,
) {
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
        progress.show(output, &ev);
    }
}
