//! The session's video: the other side's picture large, mine picture-in-picture, and the
//! controls (start/stop, source, mirror, fullscreen). Pictures come from the core's frame
//! slots; each stream has one texture, updated in place with the latest picture only.

use super::login::ERROR;
use crate::app::{AppCommand, AppHandle, AppState, VideoSending};
use crate::client::session::VideoStats;
use crate::media::video::FrameSlot;
use egui::{Color32, Rect, TextureHandle, TextureOptions, pos2, vec2};

/// One stream's texture and the slot change it shows.
#[derive(Default)]
struct StreamTexture {
    seen: u64,
    texture: Option<TextureHandle>,
}

impl StreamTexture {
    /// Takes the slot's latest picture if it changed since the last frame.
    fn refresh(&mut self, ctx: &egui::Context, slot: &FrameSlot, name: &str) {
        let (seq, frame) = slot.latest();
        if seq == self.seen {
            return;
        }
        self.seen = seq;
        match frame {
            Some(f) if f.rgba.len() == f.width * f.height * 4 => {
                // Opaque pictures: premultiplied and straight alpha are the same bytes, and the
                // premultiplied path is a plain copy.
                let img = egui::ColorImage::from_rgba_premultiplied([f.width, f.height], &f.rgba);
                match &mut self.texture {
                    Some(t) if t.size() == [f.width, f.height] => t.set(img, TextureOptions::LINEAR),
                    _ => self.texture = Some(ctx.load_texture(name, img, TextureOptions::LINEAR)),
                }
            }
            _ => self.texture = None,
        }
    }
}

#[derive(Default)]
pub struct VideoPanel {
    remote: StreamTexture,
    local: StreamTexture,
    /// The window is fullscreen for the video.
    pub fullscreen: bool,
    asked_cameras: bool,
}

/// The largest rect of `aspect` (w/h) centred in `outer`.
fn fit(outer: Rect, aspect: f32) -> Rect {
    let (w, h) = (outer.width(), outer.height());
    let size = if w / h > aspect { vec2(h * aspect, h) } else { vec2(w, w / aspect) };
    Rect::from_center_size(outer.center(), size)
}

fn aspect(t: &TextureHandle) -> f32 {
    let [w, h] = t.size();
    w as f32 / h.max(1) as f32
}

const MIRRORED: Rect = Rect { min: pos2(1.0, 0.0), max: pos2(0.0, 1.0) };
const STRAIGHT: Rect = Rect { min: pos2(0.0, 0.0), max: pos2(1.0, 1.0) };

impl VideoPanel {
    /// Updates the textures; call once per frame while a session runs.
    pub fn refresh(&mut self, ctx: &egui::Context, core: &AppHandle) {
        self.remote.refresh(ctx, &core.video.remote, "remote-video");
        self.local.refresh(ctx, &core.video.local, "local-video");
    }

    /// Whether there is a picture to show.
    pub fn has_pictures(&self) -> bool {
        self.remote.texture.is_some() || self.local.texture.is_some()
    }

    /// The pictures in `height` points (the whole area in fullscreen).
    pub fn pictures(&mut self, ui: &mut egui::Ui, state: &AppState, peer: &str, height: f32) {
        let (area, _) = ui.allocate_exact_size(vec2(ui.available_width(), height), egui::Sense::hover());
        let painter = ui.painter_at(area);
        painter.rect_filled(area, 6.0, Color32::from_gray(16));
        let mirror = state.settings.video.mirror_preview;
        let waiting = format!("Waiting for {peer}'s picture…");
        match (&self.remote.texture, &self.local.texture) {
            (Some(r), local) => {
                let big = fit(area, aspect(r));
                // A widget, so the picture has an accessible name (screen readers, tests).
                ui.put(
                    big,
                    egui::Image::from_texture((r.id(), big.size())).alt_text(format!("Video from {peer}")),
                );
                if let Some(l) = local {
                    let w = (big.width() * 0.25).max(80.0);
                    let size = vec2(w, w / aspect(l));
                    let pip = Rect::from_min_size(big.max - size - vec2(8.0, 8.0), size);
                    painter.rect_filled(pip.expand(2.0), 3.0, Color32::from_gray(40));
                    painter.image(l.id(), pip, if mirror { MIRRORED } else { STRAIGHT }, Color32::WHITE);
                }
            }
            (None, Some(l)) => {
                let mine = fit(area, aspect(l));
                painter.image(l.id(), mine, if mirror { MIRRORED } else { STRAIGHT }, Color32::WHITE);
                painter.text(
                    area.center_top() + vec2(0.0, 12.0),
                    egui::Align2::CENTER_TOP,
                    if state.video.remote_on { waiting } else { format!("{peer} sends no video") },
                    egui::FontId::proportional(14.0),
                    Color32::from_gray(220),
                );
            }
            (None, None) => {
                let text = if state.video.remote_on { waiting } else { "No video yet".to_owned() };
                painter.text(
                    area.center(),
                    egui::Align2::CENTER_CENTER,
                    text,
                    egui::FontId::proportional(15.0),
                    Color32::from_gray(200),
                );
            }
        }
    }

    /// Start/stop, source, mirror, fullscreen, and what the camera is doing.
    pub fn controls(&mut self, ui: &mut egui::Ui, state: &AppState, core: &AppHandle) {
        if !self.asked_cameras && state.video.cameras.is_none() {
            self.asked_cameras = true;
            core.send(AppCommand::ListCameras);
        }
        let sending = &state.video.sending;
        ui.horizontal_wrapped(|ui| {
            match sending {
                VideoSending::On { .. } | VideoSending::Starting => {
                    if ui.button("Stop my video").clicked() {
                        core.send(AppCommand::StopVideo);
                    }
                }
                VideoSending::Off | VideoSending::Failed(_) => {
                    if ui.button("Start my video").clicked() {
                        core.send(AppCommand::StartVideo(None));
                    }
                }
            }
            let current = state.settings.video.source.clone();
            let label = |s: &str| -> String {
                match s {
                    "test-pattern" => "Test pattern".into(),
                    "camera" => "First camera".into(),
                    other => other
                        .strip_prefix("camera:")
                        .and_then(|n| n.parse::<u32>().ok())
                        .and_then(|n| {
                            state
                                .video
                                .cameras
                                .as_ref()?
                                .as_ref()
                                .ok()?
                                .iter()
                                .find(|c| c.index == n)
                                .cloned()
                        })
                        .map(|c| c.name)
                        .unwrap_or_else(|| other.to_owned()),
                }
            };
            let mut chosen = current.clone();
            egui::ComboBox::from_label("Source").selected_text(label(&current)).show_ui(ui, |ui| {
                ui.selectable_value(&mut chosen, "camera".to_owned(), "First camera");
                if let Some(Ok(cams)) = &state.video.cameras {
                    for c in cams {
                        ui.selectable_value(&mut chosen, format!("camera:{}", c.index), c.name.clone());
                    }
                }
                ui.selectable_value(&mut chosen, "test-pattern".to_owned(), "Test pattern");
            });
            if chosen != current {
                core.send(AppCommand::SetVideoSource(chosen));
            }
            if ui.small_button("Find cameras").on_hover_text("Look for cameras again").clicked() {
                core.send(AppCommand::ListCameras);
            }
            let mut mirror = state.settings.video.mirror_preview;
            if ui.checkbox(&mut mirror, "Mirror my picture").changed() {
                core.send(AppCommand::SetMirrorPreview(mirror));
            }
            let full = if self.fullscreen { "Exit fullscreen" } else { "Fullscreen" };
            if ui.button(full).clicked() {
                self.set_fullscreen(ui.ctx(), !self.fullscreen);
            }
        });
        // One copy of the figures per frame, for both lines.
        let stats = core.video.stats();
        if let Some(s) = stats_line(stats.as_ref()) {
            ui.weak(format!("Receiving {s}"));
        }
        match sending {
            VideoSending::Starting => {
                ui.weak("Starting my video…");
            }
            VideoSending::On { what } => {
                ui.weak(format!("Sending {what}"));
                if let Some(s) = send_line(stats.as_ref()) {
                    ui.weak(s);
                }
            }
            VideoSending::Failed(reason) => {
                ui.colored_label(ERROR, format!("My video: {reason}"));
                if state.settings.video.source != "test-pattern"
                    && ui.button("Send the test pattern instead").clicked()
                {
                    core.send(AppCommand::StartVideo(Some(crate::media::video::VideoSource::TestPattern)));
                }
            }
            VideoSending::Off => {}
        }
        if let Some(Ok(cams)) = &state.video.cameras
            && cams.is_empty()
            && matches!(sending, VideoSending::Off)
            && state.settings.video.source != "test-pattern"
        {
            ui.weak("No camera found here; the test pattern can be sent instead.");
        }
    }

    pub fn set_fullscreen(&mut self, ctx: &egui::Context, on: bool) {
        self.fullscreen = on;
        ctx.send_viewport_cmd(egui::ViewportCommand::Fullscreen(on));
    }

    /// Leaves fullscreen when the session is gone.
    pub fn session_over(&mut self, ctx: &egui::Context) {
        if self.fullscreen {
            self.set_fullscreen(ctx, false);
        }
        self.asked_cameras = false;
    }
}

/// "1280x720 · 30 fps · 12 ms" for the received video.
fn stats_line(stats: Option<&VideoStats>) -> Option<String> {
    let r = &stats?.receiving;
    if r.frames_decoded == 0 {
        return None;
    }
    let mut s = format!("{}x{} · {:.0} fps", r.width, r.height, r.fps);
    if let Some(l) = r.latency_p50_ms {
        s += &format!(" · {l:.0} ms");
    }
    Some(s)
}

/// "Sent at 640x360 · 0.45 Mbit/s (link limited)" for our own video.
fn send_line(stats: Option<&VideoStats>) -> Option<String> {
    let s = stats?.sending.as_ref()?;
    if s.frames_sent == 0 {
        return None;
    }
    let mut line =
        format!("Sent at {}x{} · {:.2} Mbit/s", s.width, s.height, s.target_bitrate_bps as f64 / 1e6);
    if let Some(why) = s.smaller_because() {
        line += &format!(" ({why})");
    } else if s.link_limited {
        line += " (link limited)";
    }
    Some(line)
}
