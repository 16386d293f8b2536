//! First run and login: server (or host one here), number, name, password, device address.

use crate::app::{AppCommand, AppHandle, AppState, Credentials, Field, LoginStatus};
use crate::number;
use egui::{Color32, RichText};
use std::net::IpAddr;

pub(crate) const ERROR: Color32 = Color32::from_rgb(0xE0, 0x4F, 0x4F);
pub(crate) const OK: Color32 = Color32::from_rgb(0x4C, 0xAF, 0x50);

#[derive(Default)]
pub struct LoginForm {
    pub host_server: bool,
    pub server: String,
    pub region: String,
    pub number: String,
    pub display_name: String,
    pub password: String,
    pub device_ip: String,
    /// Whether the device address was typed (then detection leaves it alone).
    ip_edited: bool,
    prefilled: bool,
    /// The server text the last detection was asked for.
    detected_for: Option<String>,
    /// A problem the form found itself, shown until the next attempt.
    local_error: Option<(Field, String)>,
    /// The verification code being typed.
    pub code: String,
}

/// A labelled field in a two-column grid row (the label names it for screen readers and tests).
pub(crate) fn grid_field(
    ui: &mut egui::Ui,
    label: &str,
    value: &mut String,
    hint: &str,
    password: bool,
) -> egui::Response {
    let l = ui.label(label);
    let r = ui
        .add(egui::TextEdit::singleline(value).hint_text(hint).password(password).desired_width(300.0))
        .labelled_by(l.id);
    ui.end_row();
    r
}

/// A coloured label that wraps within the field column instead of running off the form.
pub(crate) fn wrapped(ui: &mut egui::Ui, color: Color32, text: String) -> egui::Response {
    ui.scope(|ui| {
        ui.set_max_width(300.0);
        ui.add(egui::Label::new(RichText::new(text).color(color)).wrap())
    })
    .inner
}

/// What a typed number reads as, for the line under the field.
pub(crate) fn preview(input: &str, region: &str) -> Option<Result<String, String>> {
    if input.trim().is_empty() {
        return None;
    }
    Some(match number::normalize(input, Some(region)) {
        Ok(n) => Ok(n.international()),
        Err(e) => Err(e.to_string()),
    })
}

impl LoginForm {
    /// Fills the form from the saved login the first time a state arrives.
    pub fn prefill(&mut self, state: &AppState) {
        if self.prefilled {
            return;
        }
        self.prefilled = true;
        self.region = state.settings.region.clone();
        // A first run with nothing set up hosts its own server: one command, a working app.
        self.host_server = state.settings.host_server || state.profile.is_none();
        if let Some(p) = &state.profile {
            self.server = p.server.clone();
            self.number = p.number.clone();
            self.display_name = p.display_name.clone();
            if let Some(ip) = p.device_ip {
                self.device_ip = ip.to_string();
                self.ip_edited = true;
            }
            if let Some(r) = &p.region {
                self.region = r.clone();
            }
        }
        if self.region.is_empty() {
            self.region = "DE".into();
        }
    }

    fn credentials(&self) -> Credentials {
        Credentials {
            server: self.server.clone(),
            number: self.number.clone(),
            display_name: self.display_name.clone(),
            password: self.password.clone(),
            region: self.region.clone(),
            device_ip: self.device_ip.trim().parse::<IpAddr>().ok(),
            host_server: self.host_server,
            pin: None,
        }
    }

    /// Problems the form can see itself, before asking the server.
    pub fn check(&self, register: bool) -> Result<(), (Field, String)> {
        if !self.host_server && self.server.trim().is_empty() {
            return Err((
                Field::Server,
                "Enter the server address, or host a server on this computer.".into(),
            ));
        }
        if let Err(e) = number::normalize(&self.number, Some(&self.region)) {
            return Err((Field::Number, format!("Phone number: {e}")));
        }
        if register && self.display_name.trim().is_empty() {
            return Err((Field::DisplayName, "Enter the name others see when you call.".into()));
        }
        if self.password.chars().count() < 8 {
            return Err((Field::Password, "The password must be at least 8 characters long.".into()));
        }
        Ok(())
    }

    pub fn show(&mut self, ui: &mut egui::Ui, state: &AppState, core: &AppHandle) {
        // Detect this device's address once at first, then whenever the server changes.
        if self.detected_for.is_none() {
            let towards = if self.host_server || self.server.trim().is_empty() {
                // The interface a LAN peer would reach (no packet is sent).
                "192.0.2.1:80".to_string()
            } else {
                self.server.clone()
            };
            self.detected_for = Some(self.server.clone());
            core.send(AppCommand::DetectIp { server: towards });
        }
        if !self.ip_edited
            && let Some(ip) = state.detected_ip
        {
            self.device_ip = ip.to_string();
        }
        let busy = matches!(state.login, LoginStatus::Busy(_));
        if busy {
            self.local_error = None;
        }
        egui::CentralPanel::default().show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| {
                ui.vertical_centered(|ui| {
                    ui.add_space(12.0);
                    ui.heading(RichText::new("Sidecall").size(28.0));
                    ui.label("Video and files beside your phone call.");
                    ui.add_space(12.0);
                });
                let width = 480.0f32.min(ui.available_width());
                let pad = ((ui.available_width() - width) / 2.0).max(0.0);
                ui.horizontal(|ui| {
                    ui.add_space(pad);
                    ui.vertical(|ui| {
                        ui.set_max_width(width);
                        egui::Frame::group(ui.style()).inner_margin(16.0).show(ui, |ui| {
                            if let LoginStatus::Verifying(v) = &state.login {
                                self.verify_step(ui, v, core);
                            } else {
                                ui.add_enabled_ui(!busy, |ui| self.form(ui, state, core));
                                ui.add_space(8.0);
                                self.messages(ui, state, core);
                            }
                        });
                    });
                });
            });
        });
    }

    fn messages(&self, ui: &mut egui::Ui, state: &AppState, core: &AppHandle) {
        match (&state.login, &self.local_error) {
            (_, Some((_, msg))) => {
                ui.colored_label(ERROR, msg);
            }
            (LoginStatus::Busy(what), _) => {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label(what);
                });
            }
            (LoginStatus::Failed { message, .. }, _) => {
                ui.colored_label(ERROR, message);
            }
            (LoginStatus::Untrusted { url, fingerprint }, _) => {
                wrapped(
                    ui,
                    ERROR,
                    format!(
                        "The server at {url} has a self-signed certificate, so no authority vouches for it. \
                         Trust it only if its fingerprint below is the one the server shows \
                         (the app that hosts it shows it on its home screen):"
                    ),
                );
                ui.monospace(fingerprint);
                ui.horizontal(|ui| {
                    if ui.button("Trust this server").clicked() {
                        core.send(AppCommand::TrustServer { fingerprint: fingerprint.clone() });
                    }
                    if ui.button("Cancel").clicked() {
                        core.send(AppCommand::DistrustServer);
                    }
                });
            }
            (LoginStatus::Idle | LoginStatus::Verifying(_), _) => {}
        }
        if let Some(n) = &state.notice {
            ui.colored_label(ERROR, n);
        }
    }

    fn form(&mut self, ui: &mut egui::Ui, state: &AppState, core: &AppHandle) {
        let before =
            (self.server.clone(), self.number.clone(), self.display_name.clone(), self.password.clone());
        self.form_fields(ui, state, core);
        let after =
            (self.server.clone(), self.number.clone(), self.display_name.clone(), self.password.clone());
        if before != after {
            // The user is fixing things: the old complaint no longer applies.
            self.local_error = None;
        }
    }

    fn form_fields(&mut self, ui: &mut egui::Ui, state: &AppState, core: &AppHandle) {
        ui.checkbox(&mut self.host_server, "Host a server on this computer")
            .on_hover_text("Runs the registry inside this app and listens on your network, so others can use this computer as their server.");
        let failed_field = match (&self.local_error, &state.login) {
            (Some((f, _)), _) => Some(*f),
            (None, LoginStatus::Failed { field, .. }) => *field,
            _ => None,
        };
        // A mark beside the field the error is about.
        let mark = |ui: &mut egui::Ui, f: Field| {
            if failed_field == Some(f) {
                ui.label("");
                ui.colored_label(ERROR, "see the message below");
                ui.end_row();
            }
        };
        egui::Grid::new("login-grid").num_columns(2).spacing([12.0, 8.0]).show(ui, |ui| {
            if self.host_server {
                ui.label("Server");
                ui.label(format!("This computer (port {})", state.settings.host_port));
                ui.end_row();
            } else {
                let r = grid_field(ui, "Server address", &mut self.server, "e.g. 192.168.1.10:7480", false);
                mark(ui, Field::Server);
                if r.lost_focus() && self.detected_for.as_deref() != Some(self.server.as_str()) {
                    self.detected_for = Some(self.server.clone());
                    core.send(AppCommand::DetectIp { server: self.server.clone() });
                }
            }
            let l = ui.label("Country");
            let shown = format!("{} ({})", super::regions::name(&self.region), self.region);
            egui::ComboBox::from_id_salt("login-region")
                .selected_text(shown)
                .show_ui(ui, |ui| {
                    for (code, n) in super::regions::REGIONS {
                        ui.selectable_value(&mut self.region, code.to_string(), format!("{n} ({code})"));
                    }
                })
                .response
                .labelled_by(l.id);
            ui.end_row();
            grid_field(ui, "Phone number", &mut self.number, "as you would dial it", false);
            ui.label("");
            match preview(&self.number, &self.region) {
                Some(Ok(n)) => ui.colored_label(OK, n),
                Some(Err(e)) => wrapped(ui, ERROR, e),
                None => ui.weak("your number, in any common format"),
            };
            ui.end_row();
            mark(ui, Field::Number);
            grid_field(
                ui,
                "Display name",
                &mut self.display_name,
                "the name others see (new accounts)",
                false,
            );
            mark(ui, Field::DisplayName);
            grid_field(ui, "Password", &mut self.password, "at least 8 characters", true);
            mark(ui, Field::Password);
            let r =
                grid_field(ui, "Device IP address", &mut self.device_ip, "detected; edit if needed", false);
            if r.changed() {
                self.ip_edited = true;
            }
        });
        if !self.device_ip.trim().is_empty() && self.device_ip.trim().parse::<IpAddr>().is_err() {
            ui.colored_label(ERROR, "The device IP address is not an IP address.");
        }
        ui.add_space(8.0);
        ui.horizontal(|ui| {
            if ui.button("Log in").clicked() {
                self.local_error = self.check(false).err();
                if self.local_error.is_none() {
                    core.send(AppCommand::Login(self.credentials()));
                }
            }
            let create = ui.button("Create account").on_hover_text(
                "Also to move your number here when you lost the password or the number was someone \
                 else's: once it is verified, the account is yours and its other devices are logged out.",
            );
            if create.clicked() {
                self.local_error = self.check(true).err();
                if self.local_error.is_none() {
                    core.send(AppCommand::Register(self.credentials()));
                }
            }
        });
    }

    /// Registration's code step: type the code (or watch it fill in), or wait for approval.
    fn verify_step(&mut self, ui: &mut egui::Ui, v: &crate::app::VerifyView, core: &AppHandle) {
        use crate::protocol::VerifyMethod;
        ui.heading(format!("Verify {}", v.number));
        ui.add_space(4.0);
        wrapped(ui, ui.visuals().text_color(), v.message.clone());
        ui.add_space(8.0);
        if v.method == VerifyMethod::Admin {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("Waiting for the administrator: you are logged in as soon as they approve.");
            });
        } else {
            if v.automatic {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label("Watching your phone line for the call: the code fills itself in.");
                });
            }
            let mut send = false;
            ui.add_enabled_ui(!v.checking, |ui| {
                ui.horizontal(|ui| {
                    let l = ui.label("Code");
                    let r = ui
                        .add(
                            egui::TextEdit::singleline(&mut self.code)
                                .hint_text(format!("{} digits", v.digits))
                                .desired_width(120.0),
                        )
                        .labelled_by(l.id);
                    send = r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
                    send |= ui.button("Verify").clicked();
                });
            });
            if send {
                core.send(AppCommand::SubmitCode(std::mem::take(&mut self.code)));
            }
            if v.checking {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label("Checking the code…");
                });
            }
        }
        if let Some(e) = &v.error {
            wrapped(ui, ERROR, e.clone());
        }
        ui.add_space(8.0);
        if ui.button("Cancel").clicked() {
            core.send(AppCommand::CancelVerification);
        }
    }
}
