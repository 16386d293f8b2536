//! The saved login of one profile: server, number, token (never the password).
//!
//! Profiles live in `<config dir>/profiles/<name>.toml`; the config dir is the platform's
//! (`~/.config/sidecall` on Linux) unless `SIDECALL_CONFIG_DIR` names another.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub server: String,
    #[serde(default)]
    pub number: String,
    #[serde(default)]
    pub display_name: String,
    /// Region national numbers are read in, e.g. `DE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_ip: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<i64>,
    /// SHA-256 fingerprint of the server's self-signed certificate, as the user trusted it
    /// on first login; the server must present exactly this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_fingerprint: Option<String>,
}

impl Profile {
    /// Which server certificates this profile accepts.
    pub fn trust(&self) -> crate::client::tls::Trust {
        crate::client::tls::Trust::from_pin(self.server_fingerprint.as_deref())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no config folder could be found for this user: set SIDECALL_CONFIG_DIR")]
    NoConfigDir,
    #[error("invalid profile name \"{0}\": use letters, digits, - and _")]
    BadName(String),
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} is damaged: {detail}. Fix it or delete it and log in again")]
    Parse { path: String, detail: String },
    #[error("cannot save {path}: {source}")]
    Write { path: String, source: std::io::Error },
}

/// The folder holding profiles and other settings.
pub fn config_dir() -> Result<PathBuf, ConfigError> {
    if let Some(dir) = std::env::var_os("SIDECALL_CONFIG_DIR") {
        return Ok(PathBuf::from(dir));
    }
    directories::ProjectDirs::from("org", "Sidecall", "sidecall")
        .map(|d| d.config_dir().to_path_buf())
        .ok_or(ConfigError::NoConfigDir)
}

/// The folder for data the program keeps (the hosted server's database, logs).
pub fn data_dir() -> Option<PathBuf> {
    crate::data_dir()
}

pub fn profile_path(dir: &Path, name: &str) -> Result<PathBuf, ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        return Err(ConfigError::BadName(name.to_string()));
    }
    Ok(dir.join("profiles").join(format!("{name}.toml")))
}

impl Profile {
    /// Loads a profile; `Ok(None)` when it does not exist yet.
    pub fn load(path: &Path) -> Result<Option<Profile>, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(ConfigError::Read { path: path.display().to_string(), source });
            }
        };
        toml::from_str(&text).map(Some).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            detail: e.message().to_string(),
        })
    }

    /// Saves atomically (write a temporary file, then rename), readable only by the user.
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let err = |source| ConfigError::Write { path: path.display().to_string(), source };
        let text = toml::to_string_pretty(self).map_err(|e| err(std::io::Error::other(e.to_string())))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(err)?;
        let tmp = path.with_extension("toml.tmp");
        {
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts.open(&tmp).map_err(err)?;
            f.write_all(text.as_bytes()).map_err(err)?;
            f.sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, path).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_round_trip_and_damage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = profile_path(dir.path(), "work").expect("name");
        assert_eq!(Profile::load(&path).expect("load"), None);
        let p = Profile {
            server: "http://h:1".into(),
            number: "+4930123456".into(),
            token: Some("t".into()),
            ..Default::default()
        };
        p.save(&path).expect("save");
        assert_eq!(Profile::load(&path).expect("load"), Some(p));
        std::fs::write(&path, "server = [").expect("write");
        assert!(matches!(Profile::load(&path), Err(ConfigError::Parse { .. })));
        assert!(profile_path(dir.path(), "../x").is_err());
    }
}
