//! Settings kept on this computer, and where a profile keeps its files.

use crate::client::config;
use crate::media::video::{Size, VideoParams, VideoSource};
use crate::server;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where one profile keeps its files.
#[derive(Clone, Debug)]
pub struct AppPaths {
    pub config_dir: PathBuf,
    pub data_dir: PathBuf,
    pub profile: String,
}

impl AppPaths {
    /// The platform's folders (or `SIDECALL_CONFIG_DIR` / `SIDECALL_DATA_DIR`).
    pub fn for_profile(profile: &str) -> Result<Self, config::ConfigError> {
        let config_dir = config::config_dir()?;
        let data_dir = config::data_dir().ok_or(config::ConfigError::NoConfigDir)?;
        Ok(AppPaths { config_dir, data_dir, profile: profile.to_string() })
    }

    pub(crate) fn profile_file(&self) -> Result<PathBuf, config::ConfigError> {
        config::profile_path(&self.config_dir, &self.profile)
    }

    pub(crate) fn settings_file(&self) -> PathBuf {
        self.config_dir.join("profiles").join(format!("{}.settings.toml", self.profile))
    }

    pub(crate) fn history_file(&self) -> PathBuf {
        self.data_dir.join("history").join(format!("{}.json", self.profile))
    }

    pub(crate) fn server_dir(&self) -> PathBuf {
        self.data_dir.join("server")
    }
}

/// Settings kept on this computer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AppSettings {
    /// Country national numbers are read in (two letters).
    pub region: String,
    /// 0.0 … 1.0
    pub ring_volume: f32,
    pub ring_muted: bool,
    /// Requests from these numbers (E.164) are accepted without asking.
    pub auto_accept: Vec<String>,
    /// Start the registry server inside the app.
    pub host_server: bool,
    pub host_port: u16,
    /// Where received files go (default: Downloads/Sidecall).
    pub save_dir: Option<PathBuf>,
    /// Receive files the peer sends during a session without asking.
    pub auto_accept_files: bool,
    /// What to do when the phone places a call the watchers report.
    pub on_call: OnCall,
    /// End the data session when the phone call ends.
    pub end_with_call: bool,
    /// Request the session as soon as the phone dials, or only once the call is answered.
    pub start_when: StartWhen,
    /// `tel:` links have the server place the phone call (click-to-call), where it can.
    pub tel_places_call: bool,
    /// Area code local numbers are read in (call monitors report numbers as dialed).
    pub area_code: String,
    /// Closing the window keeps Sidecall running in the tray (where the desktop has one).
    pub close_to_tray: bool,
    /// Start Sidecall, minimised to the tray, when the user logs in to the desktop.
    pub autostart: bool,
    pub fritz: FritzSettings,
    pub ami: AmiSettings,
    pub phone: PhoneSettings,
    pub video: VideoSettings,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct VideoSettings {
    /// `camera` (the first), `camera:N` or `test-pattern`.
    pub source: String,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// 0: chosen from size and frame rate.
    pub bitrate_kbps: u32,
    /// Show my own picture mirrored, as in a mirror.
    pub mirror_preview: bool,
    /// Turn my camera on when I accept a caller who offers video.
    pub camera_on_video_offer: bool,
}

impl Default for VideoSettings {
    fn default() -> Self {
        VideoSettings {
            source: "camera".into(),
            width: 1280,
            height: 720,
            fps: 30,
            bitrate_kbps: 0,
            mirror_preview: true,
            camera_on_video_offer: true,
        }
    }
}

impl VideoSettings {
    /// What to send, with `source` instead of the saved one if given.
    pub fn params(&self, source: Option<VideoSource>) -> VideoParams {
        let d = VideoParams::default();
        let size = Size { width: self.width, height: self.height };
        VideoParams {
            source: source.or_else(|| self.source.parse().ok()).unwrap_or(VideoSource::Camera(None)),
            size: if format!("{size}").parse::<Size>().is_ok() { size } else { d.size },
            fps: self.fps.clamp(1, 60),
            bitrate: self.bitrate_kbps.saturating_mul(1000),
        }
    }
}

/// When a call the watchers report requests the data session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartWhen {
    /// As soon as the phone dials (the callee's desktop rings along with the phone).
    #[default]
    Dialed,
    /// Once the phone call is answered (FRITZ!Box CONNECT, Asterisk DialEnd ANSWER, the
    /// phone's "connected" action URL).
    Answered,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnCall {
    /// Request the session at once.
    #[default]
    Automatic,
    /// Ask in the window first.
    Ask,
    Off,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FritzSettings {
    pub enabled: bool,
    /// `fritz.box` or `192.168.178.1` (port 1012 unless given).
    pub host: String,
    /// Place calls from the box (TR-064 dialing help) with the *Call* button.
    pub dial: bool,
    /// The box user for TR-064 (with the right "FRITZ!Box settings").
    pub username: String,
    pub password: String,
    /// The handset the box rings first (its name on the box); empty: the dialing help's.
    pub handset: String,
}

impl FritzSettings {
    /// TR-064 on the box, when dialing from it is set up.
    pub fn tr064(&self) -> Option<crate::calls::tr064::Tr064Config> {
        let host = self.host.trim();
        if !self.dial || host.is_empty() {
            return None;
        }
        let host = host.split(':').next().unwrap_or(host);
        Some(crate::calls::tr064::Tr064Config {
            base: format!("http://{host}:49000"),
            username: self.username.clone(),
            password: self.password.clone(),
            handset: Some(self.handset.trim().to_string()).filter(|h| !h.is_empty()),
        })
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AmiSettings {
    pub enabled: bool,
    /// `pbx.local` (port 5038 unless given).
    pub host: String,
    pub username: String,
    pub secret: String,
    pub extension: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PhoneSettings {
    pub enabled: bool,
    /// Where the action URLs are served.
    pub listen: String,
    /// Only this address may call them.
    pub phone_ip: String,
}

impl Default for PhoneSettings {
    fn default() -> Self {
        PhoneSettings { enabled: false, listen: "0.0.0.0:7481".into(), phone_ip: String::new() }
    }
}

pub(crate) fn with_port(host: &str, port: u16) -> String {
    let h = host.trim();
    if h.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        h.to_string()
    } else {
        format!("{h}:{port}")
    }
}

impl Default for AppSettings {
    fn default() -> Self {
        AppSettings {
            region: "DE".into(),
            ring_volume: 0.8,
            ring_muted: false,
            auto_accept: Vec::new(),
            host_server: false,
            host_port: server::DEFAULT_PORT,
            save_dir: None,
            auto_accept_files: true,
            on_call: OnCall::Automatic,
            end_with_call: true,
            start_when: StartWhen::Dialed,
            tel_places_call: false,
            area_code: String::new(),
            close_to_tray: true,
            autostart: false,
            fritz: FritzSettings::default(),
            ami: AmiSettings::default(),
            phone: PhoneSettings::default(),
            video: VideoSettings::default(),
        }
    }
}

impl AppSettings {
    pub(crate) fn load(path: &Path) -> AppSettings {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).unwrap_or_else(|e| {
                tracing::warn!("{} is damaged ({}); using defaults", path.display(), e.message());
                AppSettings::default()
            }),
            Err(_) => AppSettings::default(),
        }
    }

    pub(crate) fn save(&self, path: &Path) -> std::io::Result<()> {
        let text = toml::to_string_pretty(self).map_err(|e| std::io::Error::other(e.to_string()))?;
        write_atomic(path, text.as_bytes())
    }
}

pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
