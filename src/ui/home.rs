//! The main window: status, availability, dialing, the session, history; the incoming prompt.

use super::login::{ERROR, OK, preview};
use super::settings::SettingsWindow;
use super::{duration_text, tick};
use crate::client::StopReason;
use crate::client::app::{
    AppCommand, AppHandle, AppState, Connection, Direction, HistoryEntry, HistoryOutcome, OutgoingStatus,
};
use crate::protocol::{Offer, Role};
use egui::{Color32, RichText};

const WAITING: Color32 = Color32::from_rgb(0xE0, 0xA0, 0x30);

pub struct HomeView {
    pub dial: String,
    pub offer_files: bool,
    pub offer_video: bool,
}

impl Default for HomeView {
    fn default() -> Self {
        HomeView { dial: String::new(), offer_files: true, offer_video: false }
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
                    session_panel(ui, state, active, core);
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
        });
        if start && online && !ringing {
            core.send(AppCommand::Dial {
                target: self.dial.trim().to_string(),
                offer: Offer { files: self.offer_files, video: self.offer_video },
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
                if o.status == OutgoingStatus::Ringing
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
        _ => "it is over",
    }
}

fn session_panel(ui: &mut egui::Ui, state: &AppState, active: &crate::client::app::Active, core: &AppHandle) {
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
        ui.weak(format!(
            "Peer address: {} (its device reports {})",
            active.peer.observed_ip,
            active.peer.device_ip.map(|i| i.to_string()).unwrap_or_else(|| "nothing".into())
        ));
        ui.add_space(8.0);
        ui.columns(2, |cols| {
            cols[0].group(|ui| {
                ui.set_min_height(120.0);
                ui.strong("Files");
                ui.weak(if active.offer.files {
                    "Drop files here to send them (coming soon)."
                } else {
                    "Not offered."
                });
            });
            cols[1].group(|ui| {
                ui.set_min_height(120.0);
                ui.strong("Video");
                ui.weak(if active.offer.video {
                    "The other camera appears here (coming soon)."
                } else {
                    "Not offered."
                });
            });
        });
    });
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
            ui.colored_label(color, text);
            ui.end_row();
        }
    });
}

fn time_text(unix: u64) -> String {
    use chrono::TimeZone;
    match chrono::Local.timestamp_opt(unix as i64, 0).single() {
        Some(t) => t.format("%Y-%m-%d %H:%M").to_string(),
        None => String::from("?"),
    }
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
        ui.label(format!("offers {}", r.offer));
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
            let decline = egui::Button::new(RichText::new("Decline").color(Color32::WHITE)).fill(ERROR);
            if ui.add(decline).clicked() {
                core.send(AppCommand::Answer { session_id: r.session_id.clone(), accept: false });
            }
        });
    });
}
