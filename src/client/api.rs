//! The server's HTTP API: register, log in, log out.

use super::tls::{Trust, client_config};
use crate::protocol::{
    ErrorCode, FieldName, HttpError, LOGIN_PATH, LOGOUT_PATH, LoginRequest, LoginResponse, REGISTER_PATH,
    RegisterAnswer, RegisterRequest, VERIFY_PATH, VerifyAnswer, VerifyRequest,
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
    /// A self-signed (or otherwise unvouched-for) certificate: trust it only if its
    /// fingerprint matches the one the server shows.
    #[error(
        "the server at {url} has a certificate no authority vouches for (self-signed?). Its fingerprint \
         (SHA-256) is {fingerprint}: if the server shows the same, trust it"
    )]
    Untrusted { url: String, fingerprint: String },
    #[error(
        "the certificate of the server at {url} changed: you trusted {expected}, it now presents {presented}. \
         Someone may be in between; if the server really has a new certificate, log in again and trust it"
    )]
    CertificateChanged { url: String, expected: String, presented: String },
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

fn http(trust: &Trust) -> Result<reqwest::Client, String> {
    crate::tls::install_default_provider();
    let tls = client_config(trust).map_err(|e| e.to_string())?;
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20))
        .user_agent(concat!("sidecall/", env!("CARGO_PKG_VERSION")))
        .use_preconfigured_tls(tls)
        .build()
        .map_err(|e| e.to_string())
}

/// Why a TLS connection to `base` failed, in the user's terms: a certificate nobody vouches
/// for, a pinned one that changed, or the transport error as it was.
pub async fn explain_tls_failure(base: &str, trust: &Trust, detail: String) -> ApiError {
    if !base.starts_with("https://") {
        return ApiError::Unreachable { url: base.to_string(), detail };
    }
    match (super::tls::probe(base).await, trust) {
        (Ok(p), Trust::Pinned(expected)) if p.fingerprint != *expected => ApiError::CertificateChanged {
            url: base.to_string(),
            expected: expected.clone(),
            presented: p.fingerprint,
        },
        (Ok(p), Trust::System) if !p.trusted => {
            ApiError::Untrusted { url: base.to_string(), fingerprint: p.fingerprint }
        }
        _ => ApiError::Unreachable { url: base.to_string(), detail },
    }
}

async fn post<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
    server: &str,
    trust: &Trust,
    path: &str,
    body: &Req,
    token: Option<&str>,
) -> Result<Option<Resp>, ApiError> {
    let base = normalize_server_url(server)?;
    let url = format!("{base}{path}");
    let client = http(trust).map_err(|detail| ApiError::Unreachable { url: base.clone(), detail })?;
    let mut req = client.post(&url).json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) if e.is_connect() && base.starts_with("https://") => {
            return Err(explain_tls_failure(&base, trust, describe(&e)).await);
        }
        Err(e) => return Err(ApiError::Unreachable { url: base.clone(), detail: describe(&e) }),
    };
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

/// Registers: the account (a server that verifies nothing), or the code step.
pub async fn register(
    server: &str,
    trust: &Trust,
    req: &RegisterRequest,
) -> Result<RegisterAnswer, ApiError> {
    post(server, trust, REGISTER_PATH, req, None)
        .await?
        .ok_or_else(|| ApiError::Unexpected { url: server.to_string(), status: 204 })
}

/// Completes a registration with its code (or asks whether an administrator approved it).
pub async fn verify(server: &str, trust: &Trust, req: &VerifyRequest) -> Result<VerifyAnswer, ApiError> {
    post(server, trust, VERIFY_PATH, req, None)
        .await?
        .ok_or_else(|| ApiError::Unexpected { url: server.to_string(), status: 204 })
}

pub async fn login(server: &str, trust: &Trust, req: &LoginRequest) -> Result<LoginResponse, ApiError> {
    post(server, trust, LOGIN_PATH, req, None)
        .await?
        .ok_or_else(|| ApiError::Unexpected { url: server.to_string(), status: 204 })
}

pub async fn logout(server: &str, trust: &Trust, token: &str) -> Result<(), ApiError> {
    post::<_, serde_json::Value>(server, trust, LOGOUT_PATH, &serde_json::json!({}), Some(token)).await?;
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
