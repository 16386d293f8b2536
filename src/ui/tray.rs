//! The tray icon (a freedesktop StatusNotifierItem over D-Bus, with `ksni`): online, offline
//! or do-not-disturb at a glance; Open, Do not disturb, Quit. It runs on a thread of its own
//! and is told the state by the window; it answers with core commands and window requests.

use crate::app::{AppCommand, AppHandle, AppState, Connection};
use ksni::TrayMethods;
use std::sync::Arc;
use tokio::sync::mpsc;

/// What the tray shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrayState {
    pub online: bool,
    pub do_not_disturb: bool,
    /// Requests ringing now.
    pub ringing: usize,
}

impl TrayState {
    pub fn of(s: &AppState) -> TrayState {
        TrayState {
            online: s.connection == Connection::Online,
            do_not_disturb: s.server_settings.do_not_disturb,
            ringing: s.incoming.len(),
        }
    }
}

/// What the tray asks of the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrayRequest {
    Open,
    Quit,
}

struct SidecallTray {
    state: TrayState,
    core: AppHandle,
    window: Arc<dyn Fn(TrayRequest) + Send + Sync>,
}

impl ksni::Tray for SidecallTray {
    fn id(&self) -> String {
        "sidecall".into()
    }

    fn title(&self) -> String {
        "Sidecall".into()
    }

    fn icon_name(&self) -> String {
        match (&self.state.online, self.state.do_not_disturb) {
            (false, _) => "user-offline",
            (true, true) => "user-busy",
            (true, false) => "user-available",
        }
        .into()
    }

    fn status(&self) -> ksni::Status {
        if self.state.ringing > 0 { ksni::Status::NeedsAttention } else { ksni::Status::Active }
    }

    fn tool_tip(&self) -> ksni::ToolTip {
        let what = match (self.state.online, self.state.do_not_disturb, self.state.ringing) {
            (_, _, n) if n > 0 => format!("{n} request(s) ringing"),
            (false, _, _) => "offline".to_string(),
            (true, true, _) => "online, do not disturb".to_string(),
            (true, false, _) => "online".to_string(),
        };
        ksni::ToolTip { title: format!("Sidecall: {what}"), ..Default::default() }
    }

    fn activate(&mut self, _x: i32, _y: i32) {
        (self.window)(TrayRequest::Open);
    }

    fn menu(&self) -> Vec<ksni::MenuItem<Self>> {
        use ksni::menu::{CheckmarkItem, StandardItem};
        vec![
            StandardItem {
                label: "Open Sidecall".into(),
                activate: Box::new(|t: &mut Self| (t.window)(TrayRequest::Open)),
                ..Default::default()
            }
            .into(),
            CheckmarkItem {
                label: "Do not disturb".into(),
                checked: self.state.do_not_disturb,
                enabled: self.state.online,
                activate: Box::new(|t: &mut Self| {
                    let on = !t.state.do_not_disturb;
                    t.state.do_not_disturb = on;
                    t.core.send(AppCommand::SetDoNotDisturb(on));
                }),
                ..Default::default()
            }
            .into(),
            ksni::MenuItem::Separator,
            StandardItem {
                label: "Quit".into(),
                activate: Box::new(|t: &mut Self| (t.window)(TrayRequest::Quit)),
                ..Default::default()
            }
            .into(),
        ]
    }

    fn watcher_offline(&self, reason: ksni::OfflineReason) -> bool {
        tracing::info!("the tray is not shown (no status-notifier host): {reason:?}");
        true
    }
}

/// The tray: tell it the state with [`Tray::show`].
pub struct Tray {
    tx: mpsc::UnboundedSender<TrayState>,
    last: Option<TrayState>,
    /// Registered with the desktop's tray (closing the window may hide it then).
    up: Arc<std::sync::atomic::AtomicBool>,
}

impl Tray {
    /// Starts the tray on its own thread (never waits). Without a D-Bus session or a tray
    /// host on the desktop it logs why and [`Tray::is_up`] stays false: the app works without.
    pub fn spawn(core: AppHandle, window: Arc<dyn Fn(TrayRequest) + Send + Sync>) -> Result<Tray, String> {
        let (tx, mut rx) = mpsc::unbounded_channel::<TrayState>();
        let up = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = up.clone();
        std::thread::Builder::new()
            .name("sidecall-tray".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => return tracing::warn!("no tray icon: {e}"),
                };
                rt.block_on(async move {
                    let tray = SidecallTray { state: TrayState::default(), core, window };
                    let handle = match tray.spawn().await {
                        Ok(h) => h,
                        Err(e) => return tracing::info!("no tray icon: {e}"),
                    };
                    flag.store(true, std::sync::atomic::Ordering::Relaxed);
                    tracing::info!("tray icon registered");
                    while let Some(state) = rx.recv().await {
                        handle.update(|t| t.state = state).await;
                    }
                    flag.store(false, std::sync::atomic::Ordering::Relaxed);
                    handle.shutdown().await;
                });
            })
            .map_err(|e| e.to_string())?;
        Ok(Tray { tx, last: None, up })
    }

    /// The desktop shows the icon (so a hidden window can be opened again from it).
    pub fn is_up(&self) -> bool {
        self.up.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Shows this state (only changes reach D-Bus).
    pub fn show(&mut self, state: TrayState) {
        if self.last.as_ref() != Some(&state) {
            self.last = Some(state.clone());
            let _ = self.tx.send(state);
        }
    }
}
