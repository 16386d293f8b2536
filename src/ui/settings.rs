//! The settings window: country, ring, auto-accept and block lists.

use super::login::ERROR;
use crate::client::app::{AppCommand, AppHandle, AppSettings, AppState};

#[derive(Default)]
pub struct SettingsWindow {
    pub open: bool,
    draft: Option<AppSettings>,
    auto_accept: String,
    blocked: String,
    /// The state values the draft was made from; a change there refreshes a closed window.
    seen: Option<(AppSettings, Vec<String>)>,
}

impl SettingsWindow {
    /// Takes new values from the core unless the user is editing.
    pub fn sync(&mut self, state: &AppState) {
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
            if let Some(p) = &state.profile {
                ui.horizontal(|ui| {
                    ui.label(format!("Server: {}", p.server));
                    if ui.small_button("Use another server (log out)").clicked() {
                        core.send(AppCommand::Logout);
                        close = true;
                    }
                });
            }
            super::regions::picker(ui, "settings-region", "Country for national numbers", &mut draft.region);
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
                let mut dir = draft.save_dir.as_ref().map(|d| d.display().to_string()).unwrap_or_default();
                let hint = crate::client::transfer::default_save_dir().display().to_string();
                if ui
                    .add(egui::TextEdit::singleline(&mut dir).hint_text(hint).desired_width(240.0))
                    .labelled_by(l.id)
                    .changed()
                {
                    draft.save_dir = (!dir.trim().is_empty()).then(|| std::path::PathBuf::from(dir.trim()));
                }
            });
            ui.add_space(6.0);
            let l = ui.label("Accept automatically from (one number per line)");
            ui.add(egui::TextEdit::multiline(&mut self.auto_accept).desired_rows(3).desired_width(320.0))
                .labelled_by(l.id);
            let l = ui.label("Blocked numbers (one per line; they see you as unavailable)");
            ui.add(egui::TextEdit::multiline(&mut self.blocked).desired_rows(3).desired_width(320.0))
                .labelled_by(l.id);
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
            core.send(AppCommand::SaveSettings { settings, blocked: lines(&self.blocked) });
        }
        self.open = open && !close && !save;
        if !self.open {
            // Show what the core confirms next time.
            self.seen = None;
        }
    }
}

fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()
}
