//! No tray icon on this platform yet (a Win32 notify icon or an `NSStatusItem` would go
//! here; see packaging/README.md): the window works as before, closing it quits.

use crate::app::{AppHandle, AppState};
use std::sync::Arc;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrayState;

impl TrayState {
    pub fn of(_s: &AppState) -> TrayState {
        TrayState
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrayRequest {
    Open,
    Quit,
}

pub struct Tray;

impl Tray {
    pub fn spawn(_core: AppHandle, _window: Arc<dyn Fn(TrayRequest) + Send + Sync>) -> Result<Tray, String> {
        Err("no tray icon on this platform".into())
    }

    pub fn is_up(&self) -> bool {
        false
    }

    pub fn show(&mut self, _state: TrayState) {}
}
