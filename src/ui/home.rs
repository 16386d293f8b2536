//! The main window: status, availability, dialing, the session, history; the incoming prompt.

use super::login::{ERROR, OK, preview};
use super::settings::SettingsWindow;
use super::video::VideoPanel;
use super::{duration_text, tick};
use crate::app::{
    AppCommand, AppHandle, AppState, Connection, Direction, FileStatus, HistoryEntry, HistoryOutcome,
    OutgoingStatus,
};
use crate::calls::linked::CallMatch;
use crate::client::StopReason;
use crate::client::transfer::Way;
use crate::protocol::{Offer, Role};
use egui::{Color32, RichText};

const WAITING: Color32 = Color32::from_rgb(0xE0, 0xA0, 0x30);

pub struct HomeView {
    pub dial: String,
    pub offer_files: bool,
    pub offer_video: bool,
    video: VideoPanel,
}

impl Default for HomeView {
    fn default() -> Self {
        HomeView { dial: String::new(), offer_files: true, offer_video: false, video: VideoPanel::default() }
    }
}

fn status(ui: &mut egui::Ui, state: &AppState) {
    let (color, text) = match &state.connection {
        Connection::Online => {
            let who = state
                .account
                .as_ref()
                .map(|a| format!("{} ({})", a.display_name, a.number))
                .unwrap_or_default();
            (OK, format!("Online as {who}"))
        }
        Connection::Connecting { attempt } if *attempt <= 1 => (WAITING, "Connecting…".to_string()),
        Connection::Connecting { attempt } => (WAITING, format!("Reconnecting (attempt {attempt})…")),
        Connection::Offline { reason, retry_in_ms } => {
            (ERROR, format!("Offline: {reason}. Retrying in {:.0} s.", (*retry_in_ms as f64 / 1000.0).ceil()))
        }
        Connection::LoggedOut => (ERROR, "Logged out".to_string()),
    };
    let (dot, _) = ui.allocate_exact_size(egui::vec2(12.0, 12.0), egui::Sense::hover());
    ui.painter().circle_filled(dot.center(), 5.0, color);
    ui.colored_label(color, text);
}

impl HomeView {
    pub fn show(
        &mut self,
        ui: &mut egui::Ui,
        state: &AppState,
        core: &AppHandle,
        settings: &mut SettingsWindow,
    ) {
        let ctx = ui.ctx().clone();
        match &state.active {
            Some(active) => {
                self.video.refresh(&ctx, core);
                if self.video.fullscreen {
                    // Only the pictures, as large as the screen; Esc or the button leaves.
                    let peer = active.peer.display_name.clone();
                    egui::CentralPanel::default().show(ui, |ui| {
                        let h = ui.available_height() - 40.0;
                        self.video.pictures(ui, state, &peer, h.max(100.0));
                        self.video.controls(ui, state, core);
                    });
                    if ctx.input(|i| i.key_pressed(egui::Key::Escape)) {
                        self.video.set_fullscreen(&ctx, false);
                    }
                    return;
                }
            }
            None => self.video.session_over(&ctx),
        }
        egui::Panel::top("home-top").show(ui, |ui| {
            ui.add_space(4.0);
            ui.horizontal(|ui| {
                status(ui, state);
                ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                    if ui.button("Log out").clicked() {
                        core.send(AppCommand::Logout);
                    }
                    if ui.button("Settings").clicked() {
                        settings.open = true;
                    }
                });
            });
            ui.horizontal(|ui| {
                let mut accepting = state.server_settings.accepting_sessions;
                if ui.checkbox(&mut accepting, "Take data sessions").changed() {
                    core.send(AppCommand::SetAccepting(accepting));
                }
                let mut dnd = state.server_settings.do_not_disturb;
                if ui.checkbox(&mut dnd, "Do not disturb").changed() {
                    core.send(AppCommand::SetDoNotDisturb(dnd));
                }
            });
            if let Some(h) = &state.hosting {
                let text = match &h.lan_url {
                    Some(lan) => format!("Hosting a server here: others on your network use {lan}"),
                    None => format!("Hosting a server here at {}", h.local_url),
                };
                ui.weak(text);
                if let Some(f) = &h.fingerprint {
                    ui.weak(format!(
                        "Its certificate fingerprint (others compare it when they first log in): {f}"
                    ));
                }
            }
            if let Some(n) = &state.notice {
                ui.horizontal(|ui| {
                    ui.colored_label(ERROR, n);
                    if ui.small_button("Dismiss").clicked() {
                        core.send(AppCommand::DismissNotice);
                    }
                });
            }
            ui.add_space(4.0);
        });
        egui::CentralPanel::default().show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| {
                if let Some(active) = &state.active {
                    session_panel(ui, state, active, core, &mut self.video);
                } else {
                    self.dial_panel(ui, state, core);
                }
                ui.add_space(12.0);
                history(ui, &state.history);
            });
        });
    }

    fn dial_panel(&mut self, ui: &mut egui::Ui, state: &AppState, core: &AppHandle) {
        ui.heading("Start a session");
        let online = state.connection == Connection::Online;
        let ringing = state.outgoing.as_ref().is_some_and(|o| !o.status.is_final());
        let mut start = false;
        let mut call = false;
        ui.horizontal(|ui| {
            let l = ui.label("Number to call");
            let r = ui
                .add(
                    egui::TextEdit::singleline(&mut self.dial)
                        .hint_text("any format, e.g. 030 1234567")
                        .desired_width(240.0),
                )
                .labelled_by(l.id);
            if r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter)) {
                start = true;
            }
        });
        let region = &state.settings.region;
        match preview(&self.dial, region) {
            Some(Ok(n)) => ui.colored_label(OK, format!("Calling {n}")),
            Some(Err(e)) => super::login::wrapped(ui, ERROR, e),
            None => ui.weak(format!("National numbers are read in {}.", super::regions::name(region))),
        };
        ui.horizontal(|ui| {
            ui.checkbox(&mut self.offer_files, "Files");
            ui.checkbox(&mut self.offer_video, "Video");
            let can = online && !ringing && preview(&self.dial, region).is_some_and(|p| p.is_ok());
            if ui.add_enabled(can, egui::Button::new("Start session")).clicked() {
                start = true;
            }
            let fritz = state.settings.fritz.tr064().is_some();
            if state.can_place_calls || fritz {
                let can_call = can && (state.extension.is_some() || (!state.can_place_calls && fritz));
                let button = ui
                    .add_enabled(can_call, egui::Button::new("Call"))
                    .on_hover_text("Your phone rings first; the session starts once they answer")
                    .on_disabled_hover_text("Set your phone's extension in Settings to place calls");
                if button.clicked() {
                    call = true;
                }
            }
        });
        if (start || call) && online && !ringing {
            let (target, offer) =
                (self.dial.trim().to_string(), Offer { files: self.offer_files, video: self.offer_video });
            core.send(if call {
                AppCommand::Call { target, offer }
            } else {
                AppCommand::Dial { target, offer }
            });
        }
        if !online {
            ui.weak("You can start a session when online.");
        }
        if let Some(o) = &state.outgoing {
            let who = preview(&o.target, region).and_then(|p| p.ok()).unwrap_or_else(|| o.target.clone());
            ui.horizontal(|ui| {
                let (color, text) = match &o.status {
                    OutgoingStatus::Dialing => (WAITING, format!("Requesting a session with {who}…")),
                    OutgoingStatus::Calling(crate::protocol::CallStage::CallingYou) => {
                        (WAITING, "Calling your phone: pick it up…".to_string())
                    }
                    OutgoingStatus::Calling(crate::protocol::CallStage::Dialing) => {
                        (WAITING, format!("Dialing {who}…"))
                    }
                    OutgoingStatus::Calling(crate::protocol::CallStage::Answered) => {
                        (WAITING, format!("{who} answered the phone: asking for the session…"))
                    }
                    OutgoingStatus::Ringing => (WAITING, format!("Waiting for {who} to accept…")),
                    OutgoingStatus::Accepted => (OK, format!("{who} accepted")),
                    OutgoingStatus::Declined => (ERROR, format!("{who} declined")),
                    OutgoingStatus::NoAnswer => (ERROR, format!("{who} did not answer (timed out)")),
                    OutgoingStatus::Unavailable => {
                        (ERROR, format!("{who} is not available for data sessions"))
                    }
                    OutgoingStatus::InvalidNumber(reason) => (ERROR, format!("Invalid number: {reason}")),
                    OutgoingStatus::Cancelled => (ERROR, "Cancelled".to_string()),
                    OutgoingStatus::Failed(msg) => (ERROR, format!("Could not start: {msg}")),
                };
                ui.colored_label(color, text);
                if matches!(o.status, OutgoingStatus::Ringing | OutgoingStatus::Calling(_))
                    && let Some(id) = &o.session_id
                    && ui.button("Cancel").clicked()
                {
                    core.send(AppCommand::End { session_id: id.clone() });
                }
            });
        }
        if let Some(reason) = state.last_ended {
            ui.weak(format!("Last session ended: {}.", ended_text(reason)));
        }
    }
}

fn ended_text(reason: StopReason) -> &'static str {
    match reason {
        StopReason::YouEnded => "you ended it",
        StopReason::PeerEnded => "the other side ended it",
        StopReason::PeerDisconnected => "the other side lost its connection",
        StopReason::ServerShutdown => "the server restarted",
        StopReason::ConnectionLost => "the connection to the server was lost",
        StopReason::NodeLost => "the server node it ran through stopped; dial again",
        _ => "it is over",
    }
}

fn session_panel(
    ui: &mut egui::Ui,
    state: &AppState,
    active: &crate::app::Active,
    core: &AppHandle,
    video: &mut VideoPanel,
) {
    tick(ui.ctx());
    let _ = state;
    egui::Frame::group(ui.style()).show(ui, |ui| {
        ui.horizontal(|ui| {
            ui.heading(format!("In session with {}", active.peer.display_name));
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                let end = egui::Button::new(RichText::new("End session").color(Color32::WHITE)).fill(ERROR);
                if ui.add(end).clicked() {
                    core.send(AppCommand::End { session_id: active.session_id.clone() });
                }
            });
        });
        ui.label(format!(
            "{} · {} · {}",
            active.peer.number,
            match active.role {
                Role::Caller => "you called",
                Role::Callee => "you accepted",
            },
            duration_text(active.since.elapsed().as_secs())
        ));
        match active.peer.observed_ip {
            Some(ip) => ui.weak(format!(
                "Peer address: {ip} (its device reports {})",
                active.peer.device_ip.map(|i| i.to_string()).unwrap_or_else(|| "nothing".into())
            )),
            None => ui.weak("Addresses hidden: the session goes through the server's relay."),
        };
        match state.path {
            Some(crate::rtc::Path::Direct) => {
                ui.label("Direct");
            }
            Some(crate::rtc::Path::Relayed) => {
                ui.label("Relayed by the server");
            }
            None => {}
        }
        ui.add_space(8.0);
        ui.group(|ui| {
            ui.strong("Video");
            let showing = video.has_pictures()
                || state.video.remote_on
                || !matches!(state.video.sending, crate::app::VideoSending::Off);
            if showing {
                let h = (ui.available_width() * 9.0 / 16.0).clamp(160.0, 420.0);
                video.pictures(ui, state, &active.peer.display_name, h);
            }
            video.controls(ui, state, core);
        });
        ui.add_space(4.0);
        ui.group(|ui| {
            ui.set_min_height(120.0);
            files_panel(ui, state, core);
        });
    });
}

fn bytes_text(b: u64) -> String {
    match b {
        b if b >= 1_000_000_000 => format!("{:.2} GB", b as f64 / 1e9),
        b if b >= 1_000_000 => format!("{:.1} MB", b as f64 / 1e6),
        b if b >= 1_000 => format!("{:.0} kB", b as f64 / 1e3),
        b => format!("{b} B"),
    }
}

fn files_panel(ui: &mut egui::Ui, state: &AppState, core: &AppHandle) {
    ui.horizontal(|ui| {
        ui.strong("Files");
        if state.channel_open && ui.button("Choose files…").clicked() {
            core.send(AppCommand::PickFiles);
        }
    });
    if !state.channel_open {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.weak("Connecting peer-to-peer…");
        });
    } else if state.files.is_empty() {
        ui.weak("Drop files anywhere on this window to send them.");
    }
    for row in state.files.iter().rev().take(50) {
        ui.separator();
        ui.horizontal(|ui| {
            ui.label(match row.way {
                Way::Sending => "to",
                Way::Receiving => "from",
            });
            ui.strong(&row.name);
            ui.weak(bytes_text(row.size));
        });
        match &row.status {
            FileStatus::Offered => {
                ui.horizontal(|ui| {
                    ui.label("wants to send you this file");
                    if ui.button("Accept file").clicked() {
                        core.send(AppCommand::AcceptFile(row.id));
                    }
                    if ui.button("Decline file").clicked() {
                        core.send(AppCommand::RejectFile(row.id));
                    }
                });
            }
            FileStatus::Preparing => {
                ui.weak("checking the file…");
            }
            FileStatus::Waiting => {
                ui.weak("waiting for the other side to accept…");
            }
            FileStatus::Active => {
                let frac = if row.size == 0 { 1.0 } else { row.bytes as f32 / row.size as f32 };
                let eta = if row.speed > 1.0 {
                    format!(
                        " · {} left",
                        duration_text((row.size.saturating_sub(row.bytes) as f64 / row.speed) as u64)
                    )
                } else {
                    String::new()
                };
                let text = format!("{:.0}% · {}/s{eta}", frac * 100.0, bytes_text(row.speed as u64));
                ui.horizontal(|ui| {
                    ui.add(egui::ProgressBar::new(frac).text(text).desired_width(200.0));
                    if ui.small_button("Cancel").clicked() {
                        core.send(AppCommand::CancelFile { id: row.id, way: row.way });
                    }
                });
            }
            FileStatus::Done { path } => {
                ui.horizontal(|ui| {
                    ui.colored_label(
                        OK,
                        match row.way {
                            Way::Sending => "sent and verified",
                            Way::Receiving => "received and verified",
                        },
                    );
                    if row.way == Way::Receiving
                        && let Some(p) = path
                        && ui.small_button("Show in folder").clicked()
                    {
                        core.send(AppCommand::ShowInFolder(p.clone()));
                    }
                });
            }
            FileStatus::Failed(r) => {
                super::login::wrapped(ui, ERROR, format!("failed: {r}"));
            }
            FileStatus::Rejected(r) => {
                super::login::wrapped(ui, ERROR, format!("declined: {r}"));
            }
            FileStatus::Cancelled(r) => {
                super::login::wrapped(ui, WAITING, format!("cancelled: {r}"));
            }
        }
    }
}

/// While files are dragged over the window during a session: an overlay; on drop, send them.
pub fn file_drop(ctx: &egui::Context, state: &AppState, core: &AppHandle) {
    let Some(active) = &state.active else { return };
    let (hovering, dropped) = ctx.input(|i| {
        let dropped: Vec<std::path::PathBuf> = i
            .raw
            .dropped_files
            .iter()
            .map(|f| f.path().to_path_buf())
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        (!i.raw.hovered_files.is_empty(), dropped)
    });
    if !dropped.is_empty() {
        core.send(AppCommand::SendFiles(dropped));
    }
    if hovering {
        let rect = ctx.content_rect();
        let painter =
            ctx.layer_painter(egui::LayerId::new(egui::Order::Foreground, egui::Id::unique("drop-overlay")));
        painter.rect_filled(rect, 0.0, Color32::from_black_alpha(180));
        painter.text(
            rect.center(),
            egui::Align2::CENTER_CENTER,
            format!("Drop to send to {}", active.peer.display_name),
            egui::FontId::proportional(28.0),
            Color32::WHITE,
        );
    }
}

fn history(ui: &mut egui::Ui, entries: &[HistoryEntry]) {
    ui.heading("History");
    if entries.is_empty() {
        ui.weak("No sessions yet.");
        return;
    }
    egui::Grid::new("history").striped(true).num_columns(4).spacing([16.0, 4.0]).show(ui, |ui| {
        for e in entries.iter().take(100) {
            ui.label(time_text(e.at));
            ui.label(match e.direction {
                Direction::Incoming => "incoming",
                Direction::Outgoing => "outgoing",
            });
            match &e.name {
                Some(n) => ui.label(format!("{n} ({})", e.number)),
                None => ui.label(&e.number),
            };
            let (color, text) = match &e.outcome {
                HistoryOutcome::Completed { seconds } => {
                    (OK, format!("session, {}", duration_text(*seconds)))
                }
                HistoryOutcome::Declined => (ERROR, "declined".into()),
                HistoryOutcome::Missed => (ERROR, "missed".into()),
                HistoryOutcome::NoAnswer => (ERROR, "no answer".into()),
                HistoryOutcome::Unavailable => (ERROR, "unavailable".into()),
                HistoryOutcome::Cancelled => (WAITING, "cancelled".into()),
                HistoryOutcome::Failed { reason } => (ERROR, format!("failed: {reason}")),
            };
            ui.horizontal(|ui| {
                ui.colored_label(color, text);
                if e.direction == Direction::Incoming {
                    if let Some(m) = e.call_match {
                        let c = if m == CallMatch::Matches { OK } else { WAITING };
                        ui.colored_label(
                            c,
                            if m == CallMatch::Matches { "matched the call" } else { "not linked" },
                        )
                        .on_hover_text(m.describe());
                    }
                    if e.verified == Some(false) {
                        ui.weak("unverified number");
                    }
                }
            });
            ui.end_row();
        }
    });
}

/// What is known of a request: the phone line's word on it, and whether the server verified
/// the caller's number.
fn marks(ui: &mut egui::Ui, m: crate::app::Marks) {
    match m.call_match {
        Some(CallMatch::Matches) => {
            ui.colored_label(OK, CallMatch::Matches.describe());
        }
        Some(CallMatch::NotLinked) => {
            ui.colored_label(ERROR, CallMatch::NotLinked.describe());
        }
        None => {}
    }
    if !m.verified {
        ui.colored_label(WAITING, "Unverified number: the server did not check that it is theirs");
    }
}

fn time_text(unix: u64) -> String {
    use chrono::TimeZone;
    match chrono::Local.timestamp_opt(unix as i64, 0).single() {
        Some(t) => t.format("%Y-%m-%d %H:%M").to_string(),
        None => String::from("?"),
    }
}

/// "Your phone is calling …: start a session?" (when the setting asks first).
pub fn call_prompt(ctx: &egui::Context, state: &AppState, core: &AppHandle) {
    let Some((_, number)) = &state.call_prompt else { return };
    egui::Modal::new(egui::Id::unique("call-prompt")).show(ctx, |ui| {
        ui.set_width(340.0);
        ui.heading("Your phone is calling");
        ui.label(RichText::new(number).size(20.0).strong());
        ui.label("Start a data session beside this call?");
        ui.horizontal(|ui| {
            if ui.button("Start data session").clicked() {
                core.send(AppCommand::CallPrompt(true));
            }
            if ui.button("Not now").clicked() {
                core.send(AppCommand::CallPrompt(false));
            }
        });
    });
}

/// The prompt for the oldest request ringing here: who, what, how long, Accept / Decline.
pub fn incoming_modal(ctx: &egui::Context, state: &AppState, core: &AppHandle) {
    let Some(r) = state.incoming.first() else { return };
    tick(ctx);
    let left = r.deadline.saturating_duration_since(std::time::Instant::now()).as_secs();
    egui::Modal::new(egui::Id::unique("incoming")).show(ctx, |ui| {
        ui.set_width(360.0);
        ui.heading("Incoming data session");
        ui.add_space(6.0);
        ui.label(RichText::new(&r.caller.display_name).size(20.0).strong());
        ui.label(&r.caller.number);
        marks(ui, r.marks);
        ui.label(format!("offers {}", r.offer));
        if r.offer.video && state.settings.video.camera_on_video_offer {
            ui.weak("Your video turns on when you accept (see Settings, Video).");
        }
        ui.weak(format!("Answer within {left} s"));
        if state.incoming.len() > 1 {
            ui.weak(format!("{} more waiting", state.incoming.len() - 1));
        }
        ui.add_space(8.0);
        ui.horizontal(|ui| {
            let accept = egui::Button::new(RichText::new("Accept").color(Color32::WHITE)).fill(OK);
            if ui.add(accept).clicked() {
                core.send(AppCommand::Answer { session_id: r.session_id.clone(), accept: true });
            }
            if r.offer.video
                && state.settings.video.camera_on_video_offer
                && ui.button("Accept, my video off").clicked()
            {
                core.send(AppCommand::AcceptWithoutVideo(r.session_id.clone()));
            }
            let decline = egui::Button::new(RichText::new("Decline").color(Color32::WHITE)).fill(ERROR);
            if ui.add(decline).clicked() {
                core.send(AppCommand::Answer { session_id: r.session_id.clone(), accept: false });
            }
        });
    });
}
