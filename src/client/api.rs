//! The server's HTTP API: register, log in, log out.

use crate::protocol::{
    ErrorCode, FieldName, HttpError, LOGIN_PATH, LOGOUT_PATH, LoginRequest, LoginResponse, REGISTER_PATH,
    RegisterRequest, RegisterResponse,
};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid server address \"{0}\": use e.g. http://192.168.1.10:7480")]
    BadUrl(String),
    #[error("cannot reach the server at {url}: {detail}. Check the address and that the server is running.")]
    Unreachable { url: String, detail: String },
    /// The server refused the request; `message` says why in plain words.
    #[error("{message}")]
    Refused { status: u16, code: ErrorCode, message: String, field: Option<FieldName> },
    #[error("the server at {url} answered something unexpected (HTTP {status}): is it a Sidecall server?")]
    Unexpected { url: String, status: u16 },
}

impl ApiError {
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ApiError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Normalises a server address: adds `http://` when no scheme is given, drops a trailing `/`.
pub fn normalize_server_url(input: &str) -> Result<String, ApiError> {
    let has_scheme = input.contains("://");
    let trimmed = input.trim().trim_end_matches('/');
    let with_scheme = if has_scheme { trimmed.to_string() } else { format!("http://{trimmed}") };
    let parsed = url::Url::parse(&with_scheme).map_err(|_| ApiError::BadUrl(input.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(ApiError::BadUrl(input.to_string()));
    }
    Ok(with_scheme)
}

/// The WebSocket URL belonging to a server base URL.
pub fn websocket_url(server: &str) -> Result<String, ApiError> {
    let base = normalize_server_url(server)?;
    let ws = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        return Err(ApiError::BadUrl(server.to_string()));
    };
    Ok(format!("{ws}{}", crate::protocol::WS_PATH))
}

fn http() -> reqwest::Client {
    crate::tls::install_default_provider();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20))
        .user_agent(concat!("sidecall/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

async fn post<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
    server: &str,
    path: &str,
    body: &Req,
    token: Option<&str>,
) -> Result<Option<Resp>, ApiError> {
    let base = normalize_server_url(server)?;
    let url = format!("{base}{path}");
    let mut req = http().post(&url).json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp =
        req.send().await.map_err(|e| ApiError::Unreachable { url: base.clone(), detail: describe(&e) })?;
    let status = resp.status();
    if status == reqwest::StatusCode::NO_CONTENT {
        return Ok(None);
    }
    let bytes =
        resp.bytes().await.map_err(|e| ApiError::Unreachable { url: base.clone(), detail: describe(&e) })?;
    if status.is_success() {
        return serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|_| ApiError::Unexpected { url: base, status: status.as_u16() });
    }
    match serde_json::from_slice::<HttpError>(&bytes) {
        Ok(err) => Err(ApiError::Refused {
            status: status.as_u16(),
            code: err.error.code,
            message: err.error.message,
            field: err.error.field,
        }),
        Err(_) => Err(ApiError::Unexpected { url: base, status: status.as_u16() }),
    }
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "no answer in time".into()
    } else if e.is_connect() {
        "connection refused or no route".into()
    } else {
        e.to_string()
    }
}

pub async fn register(server: &str, req: &RegisterRequest) -> Result<RegisterResponse, ApiError> {
    post(server, REGISTER_PATH, req, None)
        .await?
        .ok_or_else(|| ApiError::Unexpected { url: server.to_string(), status: 204 })
}

pub async fn login(server: &str, req: &LoginRequest) -> Result<LoginResponse, ApiError> {
    post(server, LOGIN_PATH, req, None)
        .await?
        .ok_or_else(|| ApiError::Unexpected { url: server.to_string(), status: 204 })
}

pub async fn logout(server: &str, token: &str) -> Result<(), ApiError> {
    post::<_, serde_json::Value>(server, LOGOUT_PATH, &serde_json::json!({}), Some(token)).await?;
    Ok(())
}

/// The address of this machine's interface that routes to `server` — what to report as the
/// device's IP address. No packet is sent.
pub fn local_ip_towards(server: &str) -> Option<std::net::IpAddr> {
    let base = normalize_server_url(server).ok()?;
    let parsed = url::Url::parse(&base).ok()?;
    let host = parsed.host_str()?.trim_matches(|c| c == '[' || c == ']').to_string();
    let port = parsed.port_or_known_default().unwrap_or(80);
    use std::net::ToSocketAddrs;
    let target = (host.as_str(), port).to_socket_addrs().ok()?.next()?;
    let bind = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let socket = std::net::UdpSocket::bind(bind).ok()?;
    socket.connect(target).ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls() {
        assert_eq!(normalize_server_url("10.0.0.2:7480/").ok().as_deref(), Some("http://10.0.0.2:7480"));
        assert_eq!(websocket_url("https://x.example").ok().as_deref(), Some("wss://x.example/api/v1/ws"));
        assert!(normalize_server_url("ftp://x").is_err());
        assert!(normalize_server_url("http://").is_err());
    }

    #[test]
    fn local_ip_for_loopback() {
        assert_eq!(local_ip_towards("http://127.0.0.1:7480"), Some("127.0.0.1".parse().expect("ip")));
    }
}
