//! The desktop window (egui/eframe). It renders the core's [`AppState`] and sends
//! [`AppCommand`]s; it never blocks and never talks to the network itself.

mod home;
mod login;
mod regions;
mod settings;
#[cfg(all(unix, not(target_os = "macos")))]
pub mod tray;
#[cfg(not(all(unix, not(target_os = "macos"))))]
#[path = "tray_none.rs"]
pub mod tray;
mod video;

use crate::app::{self, AppCommand, AppEvent, AppHandle, AppPaths, AppState};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The egui context, once the first frame ran; the core's events wake it.
type CtxCell = Arc<OnceLock<egui::Context>>;

/// A waker for the core that repaints the window (once it exists).
pub fn waker(cell: &CtxCell) -> crate::client::Waker {
    let cell = cell.clone();
    Arc::new(move || {
        if let Some(ctx) = cell.get() {
            ctx.request_repaint();
        }
    })
}

pub struct SidecallApp {
    core: AppHandle,
    events: std::sync::mpsc::Receiver<AppEvent>,
    ctx: CtxCell,
    /// The last state the core sent; `None` until the first arrives.
    state: Option<AppState>,
    login: login::LoginForm,
    home: home::HomeView,
    settings: settings::SettingsWindow,
    focused: Option<bool>,
    /// The tray icon, where the desktop has a tray.
    tray: Option<tray::Tray>,
    /// What the tray asked of the window since the last frame.
    tray_requests: std::sync::mpsc::Receiver<tray::TrayRequest>,
    tray_tx: std::sync::mpsc::Sender<tray::TrayRequest>,
    /// Quit was chosen: the window's close is not turned into hiding.
    quitting: bool,
    /// Start hidden in the tray (`--minimized`, autostart).
    start_hidden: bool,
    /// The window can hide itself: not on Wayland without X11 (winit ignores it there), where
    /// closing the window keeps quitting and the tray only offers Open and Quit.
    can_hide: bool,
}

impl SidecallApp {
    /// A window talking to a core through these channels.
    pub fn new(core: AppHandle, events: std::sync::mpsc::Receiver<AppEvent>) -> Self {
        Self::with_ctx_cell(core, events, Arc::new(OnceLock::new()))
    }

    fn with_ctx_cell(core: AppHandle, events: std::sync::mpsc::Receiver<AppEvent>, ctx: CtxCell) -> Self {
        let (tray_tx, tray_requests) = std::sync::mpsc::channel();
        SidecallApp {
            core,
            events,
            ctx,
            state: None,
            login: login::LoginForm::default(),
            home: home::HomeView::default(),
            settings: settings::SettingsWindow::default(),
            focused: None,
            tray: None,
            tray_requests,
            tray_tx,
            quitting: false,
            start_hidden: false,
            can_hide: std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_none(),
        }
    }

    /// Puts the tray icon up (Open, Do not disturb, Quit). Without a tray on the desktop the
    /// window works as before (closing it quits).
    pub fn with_tray(mut self, start_hidden: bool) -> Self {
        let tx = self.tray_tx.clone();
        let cell = self.ctx.clone();
        let window = Arc::new(move |r: tray::TrayRequest| {
            let _ = tx.send(r);
            if let Some(ctx) = cell.get() {
                ctx.request_repaint();
            }
        });
        match tray::Tray::spawn(self.core.clone(), window) {
            Ok(t) => {
                self.tray = Some(t);
                self.start_hidden = start_hidden;
            }
            Err(e) => tracing::info!("no tray icon: {e}"),
        }
        self
    }

    /// Starts a core for `paths` and a window on it.
    pub fn start(paths: AppPaths) -> Self {
        Self::start_with(paths, crate::client::session::loopback_from_env())
    }

    /// [`Self::start`], choosing whether WebRTC uses loopback only (tests on one machine).
    pub fn start_with(paths: AppPaths, loopback: bool) -> Self {
        let cell: CtxCell = Arc::new(OnceLock::new());
        let (core, events) = app::start_with(paths, waker(&cell), loopback);
        Self::with_ctx_cell(core, events, cell)
    }

    /// The state the window shows now.
    pub fn state(&self) -> Option<&AppState> {
        self.state.as_ref()
    }

    /// The session's pictures and video figures, as the window draws them.
    pub fn video(&self) -> &app::VideoView {
        &self.core.video
    }

    /// Takes what the core sent since the last frame (never waits).
    fn drain(&mut self, ctx: &egui::Context) {
        while let Ok(ev) = self.events.try_recv() {
            match ev {
                AppEvent::State(s) => {
                    self.login.prefill(&s);
                    self.settings.sync(&s);
                    self.state = Some(*s);
                }
                AppEvent::Ring { .. } => {
                    ctx.send_viewport_cmd(egui::ViewportCommand::RequestUserAttention(
                        egui::UserAttentionType::Critical,
                    ));
                }
                AppEvent::Call { .. } => {}
            }
        }
    }

    /// Draws one frame.
    pub fn show(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        let _ = self.ctx.set(ctx.clone());
        self.drain(&ctx);
        self.tray_and_close(&ctx);
        let focused = ctx.input(|i| i.focused);
        if self.focused != Some(focused) {
            self.focused = Some(focused);
            self.core.send(AppCommand::WindowFocused(focused));
        }
        let Some(state) = self.state.as_ref() else {
            egui::CentralPanel::default().show(ui, |ui| {
                ui.centered_and_justified(|ui| ui.spinner());
            });
            return;
        };
        if state.logged_in() {
            self.home.show(ui, state, &self.core, &mut self.settings);
            self.settings.show(&ctx, state, &self.core);
            home::incoming_modal(&ctx, state, &self.core);
            home::file_drop(&ctx, state, &self.core);
            home::call_prompt(&ctx, state, &self.core);
        } else {
            self.login.show(ui, state, &self.core);
        }
    }
}

impl SidecallApp {
    /// The tray's requests, and closing the window into the tray.
    fn tray_and_close(&mut self, ctx: &egui::Context) {
        let tray_up = self.can_hide && self.tray.as_ref().is_some_and(|t| t.is_up());
        if tray_up && std::mem::take(&mut self.start_hidden) {
            ctx.send_viewport_cmd(egui::ViewportCommand::Visible(false));
        }
        while let Ok(r) = self.tray_requests.try_recv() {
            match r {
                tray::TrayRequest::Open => {
                    ctx.send_viewport_cmd(egui::ViewportCommand::Visible(true));
                    ctx.send_viewport_cmd(egui::ViewportCommand::Minimized(false));
                    ctx.send_viewport_cmd(egui::ViewportCommand::Focus);
                }
                tray::TrayRequest::Quit => {
                    self.quitting = true;
                    ctx.send_viewport_cmd(egui::ViewportCommand::Close);
                }
            }
        }
        let Some(tray) = self.tray.as_mut() else { return };
        if let Some(s) = &self.state {
            tray.show(tray::TrayState::of(s));
        }
        let keep = tray_up && self.state.as_ref().is_none_or(|s| s.settings.close_to_tray);
        if ctx.input(|i| i.viewport().close_requested()) && keep && !self.quitting {
            ctx.send_viewport_cmd(egui::ViewportCommand::CancelClose);
            ctx.send_viewport_cmd(egui::ViewportCommand::Visible(false));
        }
    }
}

impl eframe::App for SidecallApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.show(ui);
    }

    fn on_exit(&mut self, _gl: Option<&eframe::glow::Context>) {
        self.core.send(AppCommand::Shutdown);
    }
}

/// Sets up logging to a daily file in the state folder (and stderr).
fn init_file_logging(paths: &AppPaths) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let dir = directories::ProjectDirs::from("org", "Sidecall", "sidecall")
        .and_then(|d| d.state_dir().map(|p| p.to_path_buf()))
        .unwrap_or_else(|| paths.data_dir.clone())
        .join("logs");
    let appender = tracing_appender::rolling::daily(&dir, format!("{}.log", paths.profile));
    let (file, guard) = tracing_appender::non_blocking(appender);
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,wgpu=warn,naga=warn,rtc::peer_connection::handler=error"));
    let ok = tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(tracing_subscriber::fmt::layer().with_ansi(false).with_writer(file))
        .try_init()
        .is_ok();
    if ok {
        tracing::info!("logging to {}", dir.display());
    }
    Some(guard)
}

/// Runs the desktop app until its window closes.
pub fn run(
    profile: &str,
    config_dir: Option<std::path::PathBuf>,
    tel: Option<String>,
    minimized: bool,
) -> Result<(), String> {
    let mut paths = AppPaths::for_profile(profile).map_err(|e| e.to_string())?;
    if let Some(dir) = config_dir {
        paths.config_dir = dir;
    }
    let _guard = init_file_logging(&paths);
    let title = if profile == "default" { "Sidecall".to_string() } else { format!("Sidecall — {profile}") };
    // winit's Wayland backend has no drag-and-drop: on a Wayland session, run through XWayland.
    let force_x11 = std::env::var_os("WAYLAND_DISPLAY").is_some() && std::env::var_os("DISPLAY").is_some();
    let event_loop_builder: Option<eframe::EventLoopBuilderHook> = if force_x11 {
        Some(Box::new(|b| {
            use winit::platform::x11::EventLoopBuilderExtX11;
            b.with_x11();
        }))
    } else {
        None
    };
    let options = eframe::NativeOptions {
        event_loop_builder,
        viewport: egui::ViewportBuilder::default()
            .with_title(&title)
            .with_app_id("org.sidecall.Sidecall")
            .with_inner_size([760.0, 620.0])
            .with_min_inner_size([520.0, 460.0]),
        ..Default::default()
    };
    eframe::run_native(
        &title,
        options,
        Box::new(move |_cc| {
            let app = SidecallApp::start(paths).with_tray(minimized);
            if let Some(number) = tel {
                app.core.send(AppCommand::TelLink(number));
            }
            Ok(Box::new(app))
        }),
    )
    .map_err(|e| format!("cannot open the window: {e}"))
}

/// Formats seconds as `m:ss` or `h:mm:ss`.
pub(crate) fn duration_text(secs: u64) -> String {
    if secs >= 3600 {
        format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
    } else {
        format!("{}:{:02}", secs / 60, secs % 60)
    }
}

/// Repaint in a second (for clocks and countdowns while they are shown).
pub(crate) fn tick(ctx: &egui::Context) {
    ctx.request_repaint_after(Duration::from_millis(500));
}
