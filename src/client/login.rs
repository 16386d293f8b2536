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

/// Creates the account `display_name` for the number and password in `p` — or, on a server
/// that verifies numbers, starts that (finish with [`verify`]).
pub async fn register(
    p: &LoginParams,
    display_name: &str,
) -> Result<crate::protocol::RegisterAnswer, ApiError> {
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

/// Sends the code of verification `id` (`None`: asks whether an administrator approved it).
pub async fn verify(
    p: &LoginParams,
    id: &str,
    code: Option<&str>,
) -> Result<crate::protocol::VerifyAnswer, ApiError> {
    let server = api::normalize_server_url(&p.server)?;
    let req = crate::protocol::VerifyRequest { id: id.to_string(), code: code.map(str::to_string) };
    api::verify(&server, &p.trust(), &req).await
}

/// The code in a caller ID (as a call watcher reports it: `+49…`, `0049…`, `030…` or
/// `4930…`): the digits after `prefix` (E.164) when the number is `prefix` plus exactly
/// `digits` digits.
pub fn code_from_caller_id(caller: &str, prefix: &str, digits: u8) -> Option<String> {
    let digits = usize::from(digits);
    let intl: String = prefix.chars().filter(char::is_ascii_digit).collect();
    let national = phonenumber::parse(None, prefix).ok().map(|n| n.national().value().to_string());
    let plain: String = caller.chars().filter(char::is_ascii_digit).collect();
    let international = caller.trim_start().starts_with('+') || plain.starts_with("00");
    let tail = |full: &str, start: &str| {
        let rest = full.strip_prefix(start)?;
        (rest.len() == digits && !start.is_empty()).then(|| rest.to_string())
    };
    if international {
        return tail(plain.trim_start_matches("00"), &intl);
    }
    tail(&plain, &intl).or_else(|| tail(plain.trim_start_matches('0'), national.as_deref()?))
}

#[cfg(test)]
mod tests {
    use super::code_from_caller_id;

    #[test]
    fn the_code_is_read_from_every_form_of_caller_id() {
        let p = "+4930123456";
        for shown in
            ["+49301234560042", "0049301234560042", "0301234560042", "49301234560042", "030 1234560042"]
        {
            assert_eq!(code_from_caller_id(shown, p, 4).as_deref(), Some("0042"), "{shown}");
        }
        for other in
            ["+4930123456004", "+493012345600421", "+4940123456 0042", "0151234560042", "", "anonymous"]
        {
            assert_eq!(code_from_caller_id(other, p, 4), None, "{other}");
        }
    }
}
