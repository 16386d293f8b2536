//! The settings window: country, ring, auto-accept and block lists.

use super::login::ERROR;
use crate::app::{AppCommand, AppHandle, AppSettings, AppState, OnCall, StartWhen};
use crate::calls::{Source, WatcherStatus};

#[derive(Default)]
pub struct SettingsWindow {
    pub open: bool,
    draft: Option<AppSettings>,
    auto_accept: String,
    blocked: String,
    /// The state values the draft was made from; a change there refreshes a closed window.
    seen: Option<(AppSettings, Vec<String>)>,
    /// The extension being typed (click-to-call), and the stored one it started from.
    extension: String,
    extension_seen: Option<Option<String>>,
}

impl SettingsWindow {
    /// Takes new values from the core unless the user is editing.
    pub fn sync(&mut self, state: &AppState) {
        if self.extension_seen.as_ref() != Some(&state.extension) {
            self.extension = state.extension.clone().unwrap_or_default();
            self.extension_seen = Some(state.extension.clone());
        }
        let now = (state.settings.clone(), state.blocked.clone());
        if self.open || self.seen.as_ref() == Some(&now) {
            return;
        }
        self.auto_accept = state.settings.auto_accept.join("\n");
        self.blocked = state.blocked.join("\n");
        self.draft = Some(state.settings.clone());
        self.seen = Some(now);
    }

    pub fn show(&mut self, ctx: &egui::Context, state: &AppState, core: &AppHandle) {
        if !self.open {
            return;
        }
        let draft = self.draft.get_or_insert_with(|| state.settings.clone());
        let mut open = self.open;
        let mut save = false;
        let mut close = false;
        egui::Window::new("Settings").open(&mut open).collapsible(false).resizable(true).show(ctx, |ui| {
            let max_h = (ctx.content_rect().height() - 160.0).max(200.0);
            egui::ScrollArea::vertical().max_height(max_h).show(ui, |ui| {
                if let Some(p) = &state.profile {
                    ui.horizontal(|ui| {
                        ui.label(format!("Server: {}", p.server));
                        if ui.small_button("Use another server (log out)").clicked() {
                            core.send(AppCommand::Logout);
                            close = true;
                        }
                    });
                }
                super::regions::picker(
                    ui,
                    "settings-region",
                    "Country for national numbers",
                    &mut draft.region,
                );
                ui.horizontal(|ui| {
                    let l = ui.label("Ring volume");
                    ui.add(egui::Slider::new(&mut draft.ring_volume, 0.0..=1.0).show_value(false))
                        .labelled_by(l.id);
                    ui.checkbox(&mut draft.ring_muted, "Mute the ring");
                    if ui.button("Test ring").clicked() {
                        core.send(AppCommand::TestRing { volume: draft.ring_volume });
                    }
                });
                ui.checkbox(&mut draft.auto_accept_files, "Receive files during a session without asking");
                ui.horizontal(|ui| {
                    let l = ui.label("Save received files in");
                    let mut dir =
                        draft.save_dir.as_ref().map(|d| d.display().to_string()).unwrap_or_default();
                    let hint = crate::client::transfer::default_save_dir().display().to_string();
                    if ui
                        .add(egui::TextEdit::singleline(&mut dir).hint_text(hint).desired_width(240.0))
                        .labelled_by(l.id)
                        .changed()
                    {
                        draft.save_dir =
                            (!dir.trim().is_empty()).then(|| std::path::PathBuf::from(dir.trim()));
                    }
                });
                ui.add_space(6.0);
                let l = ui.label("Accept automatically from (one number per line)");
                ui.add(egui::TextEdit::multiline(&mut self.auto_accept).desired_rows(3).desired_width(320.0))
                    .labelled_by(l.id);
                let l = ui.label("Blocked numbers (one per line; they see you as unavailable)");
                ui.add(egui::TextEdit::multiline(&mut self.blocked).desired_rows(3).desired_width(320.0))
                    .labelled_by(l.id);
                ui.collapsing("Privacy", |ui| {
                    let mut hide = state.server_settings.hide_address;
                    if ui.checkbox(&mut hide, "Hide my address").changed() {
                        core.send(AppCommand::SetHideAddress(hide));
                    }
                    ui.weak(
                        "Your sessions then go through the server's relay, so the people you call \
                         (and who call you) never learn your IP address; it can be a little slower.",
                    );
                });
                ui.collapsing("Video", |ui| video_settings(ui, draft, state, core));
                ui.collapsing("Phone calls", |ui| phone_settings(ui, draft, state, core));
                ui.collapsing("In the background", |ui| {
                    ui.checkbox(
                        &mut draft.close_to_tray,
                        "Keep running in the tray when the window is closed",
                    );
                    ui.checkbox(&mut draft.autostart, "Start Sidecall when I log in (minimised)");
                });
                if state.can_place_calls {
                    ui.collapsing("Placing calls", |ui| {
                        ui.horizontal(|ui| {
                            let l = ui.label("My phone's extension");
                            ui.add(
                                egui::TextEdit::singleline(&mut self.extension)
                                    .hint_text("e.g. 201")
                                    .desired_width(80.0),
                            )
                            .labelled_by(l.id);
                            if ui.button("Set extension").clicked() {
                                let ext = Some(self.extension.trim().to_string()).filter(|e| !e.is_empty());
                                core.send(AppCommand::SetExtension(ext));
                            }
                        });
                        ui.weak(
                            "With it, the Call button has the server place the phone call: your phone rings \
                             first, and the session starts once the other side answers.",
                        );
                    });
                }
            });
            if let Some(n) = &state.notice {
                ui.colored_label(ERROR, n);
            }
            ui.horizontal(|ui| {
                save = ui.button("Save").clicked();
                close |= ui.button("Close").clicked();
            });
        });
        if save {
            let mut settings = draft.clone();
            settings.auto_accept = lines(&self.auto_accept);
            core.send(AppCommand::SaveSettings {
                settings: Box::new(settings),
                blocked: lines(&self.blocked),
            });
        }
        self.open = open && !close && !save;
        if !self.open {
            // Show what the core confirms next time.
            self.seen = None;
        }
    }
}

fn status_line(ui: &mut egui::Ui, state: &AppState, source: Source) {
    let st = state.watchers.iter().find(|(s, _)| *s == source).map(|(_, st)| st);
    let (ok, text) = match st {
        None => (false, "off".to_string()),
        Some(WatcherStatus::Connecting) => (false, "connecting…".into()),
        Some(WatcherStatus::Connected) => (true, "connected".into()),
        Some(WatcherStatus::Listening { at }) => (true, format!("listening on {at}")),
        Some(WatcherStatus::Retrying { reason, retry_in_ms }) => {
            (false, format!("{reason}; retrying in {} s", retry_in_ms / 1000))
        }
        Some(WatcherStatus::Failed { reason }) => (false, reason.clone()),
    };
    let color = if ok { super::login::OK } else { ERROR };
    super::login::wrapped(ui, color, format!("Status: {text}"));
}

fn labelled(ui: &mut egui::Ui, label: &str, value: &mut String, hint: &str, password: bool) {
    ui.horizontal(|ui| {
        let l = ui.label(label);
        ui.add(egui::TextEdit::singleline(value).hint_text(hint).password(password).desired_width(200.0))
            .labelled_by(l.id);
    });
}

fn phone_settings(ui: &mut egui::Ui, draft: &mut AppSettings, state: &AppState, core: &AppHandle) {
    ui.label("When your phone places a call:");
    ui.horizontal(|ui| {
        ui.radio_value(&mut draft.on_call, OnCall::Automatic, "Start a session automatically");
        ui.radio_value(&mut draft.on_call, OnCall::Ask, "Ask first");
        ui.radio_value(&mut draft.on_call, OnCall::Off, "Do nothing");
    });
    ui.horizontal(|ui| {
        ui.label("Request the session:");
        ui.radio_value(&mut draft.start_when, StartWhen::Dialed, "when the call is dialed");
        ui.radio_value(&mut draft.start_when, StartWhen::Answered, "when it is answered");
    });
    ui.checkbox(&mut draft.end_with_call, "End the session when the phone call ends");
    if state.can_place_calls {
        ui.checkbox(&mut draft.tel_places_call, "tel: links place the phone call through the server");
    }
    labelled(ui, "Area code", &mut draft.area_code, "e.g. 030 (for local numbers)", false);
    ui.separator();
    ui.checkbox(&mut draft.fritz.enabled, "AVM FRITZ!Box call monitor");
    labelled(ui, "FRITZ!Box address", &mut draft.fritz.host, "fritz.box or 192.168.178.1", false);
    ui.horizontal(|ui| {
        if ui.button("Test FRITZ!Box").clicked() {
            core.send(AppCommand::TestWatcher { source: Source::Fritz, settings: Box::new(draft.clone()) });
        }
        ui.weak("Turn the call monitor on by dialing #96*5* once.");
    });
    ui.checkbox(
        &mut draft.fritz.dial,
        "Place calls from the FRITZ!Box (Call button; its dialing help must be on)",
    );
    if draft.fritz.dial {
        labelled(
            ui,
            "FRITZ!Box user",
            &mut draft.fritz.username,
            "a box user with \"FRITZ!Box settings\"",
            false,
        );
        labelled(ui, "FRITZ!Box password", &mut draft.fritz.password, "", true);
        labelled(ui, "Handset", &mut draft.fritz.handset, "its name on the box, e.g. FRITZ!Fon C6", false);
    }
    status_line(ui, state, Source::Fritz);
    ui.separator();
    ui.checkbox(&mut draft.ami.enabled, "Asterisk (AMI)");
    labelled(ui, "Asterisk address", &mut draft.ami.host, "pbx.local (port 5038)", false);
    labelled(ui, "AMI user", &mut draft.ami.username, "from manager.conf", false);
    labelled(ui, "AMI secret", &mut draft.ami.secret, "", true);
    labelled(ui, "Your extension", &mut draft.ami.extension, "e.g. 201", false);
    if ui.button("Test Asterisk").clicked() {
        core.send(AppCommand::TestWatcher { source: Source::Ami, settings: Box::new(draft.clone()) });
    }
    status_line(ui, state, Source::Ami);
    ui.separator();
    ui.checkbox(&mut draft.phone.enabled, "Desk phone action URLs (Snom, Yealink, Grandstream …)");
    labelled(ui, "Listen on", &mut draft.phone.listen, "0.0.0.0:7481", false);
    labelled(ui, "Phone IP address", &mut draft.phone.phone_ip, "only this phone is heard", false);
    let port = draft.phone.listen.rsplit(':').next().unwrap_or("7481").to_string();
    ui.weak(format!(
        "In the phone's action URL settings: outgoing http://THIS-COMPUTER:{port}/phone/outgoing?remote=$remote, \
         connected …/phone/connected, disconnected …/phone/disconnected"
    ));
    status_line(ui, state, Source::Phone);
}

fn video_settings(ui: &mut egui::Ui, draft: &mut AppSettings, state: &AppState, core: &AppHandle) {
    let v = &mut draft.video;
    ui.horizontal(|ui| {
        ui.label("Send from");
        ui.radio_value(&mut v.source, "camera".to_owned(), "First camera");
        if let Some(Ok(cams)) = &state.video.cameras {
            for c in cams {
                ui.radio_value(&mut v.source, format!("camera:{}", c.index), c.name.clone());
            }
        }
        ui.radio_value(&mut v.source, "test-pattern".to_owned(), "Test pattern");
        if ui.small_button("Find cameras").clicked() {
            core.send(AppCommand::ListCameras);
        }
    });
    match &state.video.cameras {
        Some(Ok(c)) if c.is_empty() => {
            ui.weak(crate::media::camera::NO_CAMERA);
        }
        Some(Err(e)) => {
            ui.colored_label(ERROR, e);
        }
        _ => {}
    }
    ui.horizontal(|ui| {
        ui.label("Picture size");
        for (w, h, name) in [(640, 480, "640×480"), (1280, 720, "1280×720 (HD)"), (1920, 1080, "1920×1080")]
        {
            if ui.radio(v.width == w && v.height == h, name).clicked() {
                (v.width, v.height) = (w, h);
            }
        }
    });
    ui.horizontal(|ui| {
        ui.label("Frames per second");
        for fps in [15, 24, 30] {
            ui.radio_value(&mut v.fps, fps, fps.to_string());
        }
    });
    ui.horizontal(|ui| {
        let l = ui.label("Bitrate (kbit/s, 0 = automatic)");
        ui.add(egui::DragValue::new(&mut v.bitrate_kbps).range(0..=20_000).speed(50)).labelled_by(l.id);
    });
    ui.checkbox(&mut v.mirror_preview, "Mirror my own picture");
    ui.checkbox(&mut v.camera_on_video_offer, "Turn my video on when I accept a caller who offers video");
}

fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()
}
