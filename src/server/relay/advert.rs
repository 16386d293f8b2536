//! How the relay is handed to devices: which relay (ours or a coturn), its URLs at the
//! name the client used, and a credential minted for the device.

use super::{Relay, creds::Secret, unix_now};
use std::net::IpAddr;
use std::time::Duration;

/// Where devices get relayed: this server's own relay, or a coturn (`use-auth-secret`)
/// sharing the secret. Either way the server mints each device its own credential.
pub enum RelayIce {
    Own(Relay),
    External { urls: Vec<String>, secret: Secret, ttl: Duration },
}

impl RelayIce {
    /// How long the credentials it mints are valid.
    pub fn credential_ttl(&self) -> Duration {
        match self {
            RelayIce::Own(r) => r.config().credential_ttl,
            RelayIce::External { ttl, .. } => *ttl,
        }
    }

    /// Whether a candidate at `ip` is on this relay. For a coturn named by host name the
    /// address cannot be checked here, and any relay candidate passes.
    pub fn is_relay_ip(&self, ip: IpAddr) -> bool {
        match self {
            RelayIce::Own(r) => r.is_own_ip(ip),
            RelayIce::External { urls, .. } => {
                let hosts: Vec<IpAddr> = urls.iter().filter_map(|u| url_ip(u)).collect();
                hosts.is_empty() || hosts.contains(&ip)
            }
        }
    }

    /// The ICE server entry for `device`, which reached this server by `host`.
    pub fn ice_server(&self, device: i64, host: &str) -> crate::protocol::IceServer {
        let (urls, cred) = match self {
            RelayIce::Own(r) => (r.urls_for(host), r.mint(device)),
            RelayIce::External { urls, secret, ttl } => {
                (urls.clone(), secret.mint(device, unix_now(), ttl.as_secs()))
            }
        };
        crate::protocol::IceServer { urls, username: Some(cred.username), credential: Some(cred.password) }
    }
}

/// The IP address of a `turn:HOST:PORT?…` URL, if HOST is one.
fn url_ip(url: &str) -> Option<IpAddr> {
    let rest = url.split_once(':')?.1;
    let rest = rest.split('?').next()?;
    if let Some(v6) = rest.strip_prefix('[') {
        return v6.split(']').next()?.parse().ok();
    }
    rest.rsplit_once(':').map_or(rest, |(h, _)| h).parse().ok()
}

/// The host part of an HTTP `Host` header: `example.org`, `192.0.2.1`, `[2001:db8::1]`.
pub fn host_of(header: &str) -> Option<String> {
    let h = header.trim();
    if h.is_empty() {
        return None;
    }
    if let Some(rest) = h.strip_prefix('[') {
        let end = rest.find(']')?;
        return Some(format!("[{}]", &rest[..end]));
    }
    let host = match h.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => h,
    };
    let ok = host.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    ok.then(|| host.to_string())
}
