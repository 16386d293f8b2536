//! `sidecall dial`.

use super::online::{connect, print_event};
use super::progress::{ProgressPrinter, drain_data_events};
use super::video::VideoWatch;
use super::{Cli, DialArgs, Exit, Failure, fail, outcome_exit, sleep_opt};
use crate::client::Event;
use crate::client::session::{DataEvent, VideoDisplay};
use crate::client::transfer::{self, ReceiveConfig, TransferEvent, Way};
use crate::protocol::{ErrorCode, Offer, Outcome, Role, SessionId};
use std::time::Duration;
use tokio::sync::mpsc;

/// `place_call`: `sidecall call` (the server places the phone call first).
pub(super) async fn dial(cli: &Cli, args: &DialArgs, place_call: bool) -> Result<Exit, Failure> {
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
    if place_call && !online.can_place_calls {
        online.close().await;
        return Err(fail(
            Exit::CallFailed,
            "this server cannot place phone calls (it has no PBX): use `sidecall dial`",
        ));
    }
    let req = if place_call {
        online.handle.call(&args.number, offer, args.region.clone())
    } else {
        online.handle.dial_with(&args.number, offer, args.region.clone(), None)
    };
    let mut session: Option<SessionId> = None;
    let mut accepted = false;
    let mut hangup_at: Option<tokio::time::Instant> = None;
    let mut interrupted = false;
    let (data_tx, mut data_rx) = mpsc::unbounded_channel();
    let mut sessions = online.sessions(data_tx);
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
                let ended = sessions.observe(&ev);
                match ev {
                    Event::DialPending { req_id, session_id } if req_id == req => session = Some(session_id),
                    Event::CallProgress { req_id, session_id, .. } if req_id == req => session = Some(session_id),
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
                        let d = sessions.start(session_id, Role::Caller, receive, args.video.params(), VideoDisplay::default());
                        if !args.send.is_empty() {
                            d.send_files(args.send.clone());
                        }
                        video.session_started();
                    }
                    Event::SessionEnded { session_id, .. } if Some(&session_id) == session.as_ref() => {
                        if let Some(d) = &ended {
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
                            if let Some(d) = sessions.current() { d.reject_file(id); }
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
            due = video.due() => video.act(due, &args.output, sessions.current()),
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
    drop(sessions);
    drain_data_events(&mut data_rx, &mut progress, &args.output).await;
    online.close().await;
    Ok(code)
}
