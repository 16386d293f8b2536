//! Logging in (and registering first, if asked): the one way the app and the CLI do it.

use crate::client::api::{self, ApiError};
use crate::client::config::Profile;
use crate::client::tls::Trust;
use crate::protocol::{LoginRequest, RegisterRequest};
use std::net::IpAddr;

/// What a login needs.
#[derive(Clone, Debug)]
pub struct LoginParams {
    /// As typed; normalised here (`http://` added, trailing `/` dropped).
    pub server: String,
    pub number: String,
    pub password: String,
    /// Region national numbers are read in, e.g. `DE`.
    pub region: Option<String>,
    pub device_ip: Option<IpAddr>,
    /// Shown to the user on their other devices (default: this computer's host name).
    pub device_name: Option<String>,
    /// The fingerprint of the server's self-signed certificate the user trusts (`None`: the
    /// system's certificate authorities must vouch for it).
    pub pin: Option<String>,
}

impl LoginParams {
    pub fn trust(&self) -> Trust {
        Trust::from_pin(self.pin.as_deref())
    }
}

/// A successful login: the profile to save (with its token), and what the server saw.
#[derive(Clone, Debug)]
pub struct LoggedIn {
    pub profile: Profile,
    pub device_id: i64,
    pub observed_ip: IpAddr,
}

/// This computer's name, for the device list.
pub fn host_name() -> Option<String> {
    std::fs::read_to_string("/etc/hostname").ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// Creates the account `display_name` for the number and password in `p`.
pub async fn register(
    p: &LoginParams,
    display_name: &str,
) -> Result<crate::protocol::RegisterResponse, ApiError> {
    let server = api::normalize_server_url(&p.server)?;
    let req = RegisterRequest {
        number: p.number.clone(),
        display_name: display_name.to_string(),
        password: p.password.clone(),
        region: p.region.clone(),
    };
    api::register(&server, &p.trust(), &req).await
}

/// Logs in; the returned profile holds the token (save it to stay logged in).
pub async fn login(p: &LoginParams) -> Result<LoggedIn, ApiError> {
    let server = api::normalize_server_url(&p.server)?;
    let req = LoginRequest {
        number: p.number.clone(),
        password: p.password.clone(),
        region: p.region.clone(),
        device_ip: p.device_ip,
        device_name: p.device_name.clone().or_else(host_name),
    };
    let trust = p.trust();
    let resp = api::login(&server, &trust, &req).await?;
    let profile = Profile {
        server,
        number: resp.number,
        display_name: resp.display_name,
        region: p.region.clone(),
        device_ip: p.device_ip,
        token: Some(resp.token),
        device_id: Some(resp.device_id),
        server_fingerprint: match trust {
            Trust::Pinned(f) => Some(f),
            Trust::System => None,
        },
    };
    Ok(LoggedIn { profile, device_id: resp.device_id, observed_ip: resp.observed_ip })
}
