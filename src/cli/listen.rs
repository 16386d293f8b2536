//! `sidecall listen`.

use super::online::{connect, print_event};
use super::phone::{PhoneLine, print_match};
use super::progress::{ProgressPrinter, drain_data_events};
use super::video::VideoWatch;
use super::{AcceptPolicy, Cli, Exit, Failure, ListenArgs, sleep_opt};
use crate::calls::linked::CallMatch;
use crate::client::Event;
use crate::client::session::{DataEvent, VideoDisplay};
use crate::client::transfer::{self, ReceiveConfig, TransferEvent};
use crate::protocol::SessionId;
use std::io::BufRead;
use std::time::Duration;
use tokio::sync::mpsc;

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

pub(super) async fn listen(cli: &Cli, args: &ListenArgs) -> Result<Exit, Failure> {
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
    let mut sessions = online.sessions(data_tx);
    let mut progress = ProgressPrinter::default();
    let mut video = VideoWatch::new(&args.video);
    let region = crate::number::normalize(&online.number, None)
        .ok()
        .and_then(|n| n.region())
        .unwrap_or_else(|| "DE".into());
    let mut phone = PhoneLine::start(args.fritz.as_deref(), region, args.area_code.clone());
    let code = loop {
        let next_hangup = hangups.iter().map(|(t, _)| *t).min();
        tokio::select! {
            ev = online.events.recv() => {
                let Some(ev) = ev else { break Exit::Error };
                print_event(&args.output, &ev);
                let ended = sessions.observe(&ev);
                match ev {
                    Event::Incoming { session_id, caller, .. } => match args.accept {
                        AcceptPolicy::All if phone.check(&caller.number) == Some(CallMatch::NotLinked) => {
                            print_match(&args.output, &session_id, Some(CallMatch::NotLinked));
                            if !args.output.json {
                                eprintln!("not accepted yet: no call from {} on your phone", caller.number);
                            }
                            phone.wait_for_call(session_id, caller.number);
                        }
                        AcceptPolicy::All => {
                            print_match(&args.output, &session_id, phone.check(&caller.number));
                            online.handle.answer(&session_id, true)
                        }
                        AcceptPolicy::None => {
                            print_match(&args.output, &session_id, phone.check(&caller.number));
                            online.handle.answer(&session_id, false);
                            if args.once { break Exit::Ok; }
                        }
                        AcceptPolicy::Ask => {
                            print_match(&args.output, &session_id, phone.check(&caller.number));
                            eprintln!("accept {session_id}? [y/N]");
                            asking.push(Ask::Session(session_id));
                        }
                    },
                    Event::IncomingClosed { session_id, .. } => {
                        phone.forget(&session_id);
                        asking.retain(|a| !matches!(a, Ask::Session(s) if *s == session_id));
                        if args.once { break Exit::Ok; }
                    }
                    Event::SessionStarted { session_id, role, .. } => {
                        if let Some(s) = args.hangup_after {
                            hangups.push((tokio::time::Instant::now() + Duration::from_secs_f64(s.max(0.0)), session_id.clone()));
                        }
                        let receive = ReceiveConfig { dir: save_dir.clone(), auto_accept: args.accept == AcceptPolicy::All };
                        let d = sessions.start(session_id, role, receive, args.video.params(), VideoDisplay::default());
                        if !args.send.is_empty() {
                            d.send_files(args.send.clone());
                        }
                        video.session_started();
                    }
                    Event::SessionEnded { session_id, .. } => {
                        hangups.retain(|(_, s)| *s != session_id);
                        if let Some(d) = &ended {
                            video.session_ended(&args.output, d);
                        }
                        if args.once { break Exit::Ok; }
                    }
                    Event::LoggedOut { .. } => break Exit::LoginNeeded,
                    _ => {}
                }
            }
            Some(ev) = phone.next() => {
                for session_id in phone.observe(ev, &args.output) {
                    online.handle.answer(&session_id, true);
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
                        if let Some(d) = sessions.current() {
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
            due = video.due() => video.act(due, &args.output, sessions.current()),
            _ = tokio::signal::ctrl_c() => break Exit::Ok,
        }
    };
    drop(sessions);
    drain_data_events(&mut data_rx, &mut progress, &args.output).await;
    online.close().await;
    Ok(code)
}
