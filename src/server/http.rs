//! The HTTP API: registration, login, logout, health, metrics, and the WebSocket upgrade.

use crate::number;
use crate::protocol::limits;
use crate::protocol::{
    ErrorBody, ErrorCode, FieldName, HttpError, LoginRequest, LoginResponse, MAX_HTTP_BODY_BYTES,
    RegisterRequest, RegisterResponse,
};
use crate::server::auth;
use crate::server::hashing::HashPool;
use crate::server::hub::Hub;
use crate::server::ratelimit::{Bucket, KeyedLimiter, LoginLimiter, LoginRefusal};
use crate::server::store::StoreError;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    pub hub: Arc<Hub>,
    /// Failed logins, per number and address.
    pub login_limit: Arc<LoginLimiter>,
    /// Registrations per address.
    pub register_limit: Arc<KeyedLimiter<IpAddr>>,
    /// Registrations from everywhere.
    pub register_global: Arc<parking_lot::Mutex<Bucket>>,
    /// Where password hashes are computed.
    pub hashing: Arc<HashPool>,
    /// Connections open, for refusing WebSockets near the file limit.
    pub admission: Arc<crate::server::listen::Admission>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Arc<Vec<IpAddr>>,
    /// How numbers are proven before registration binds them.
    pub verifier: Arc<crate::server::verify::Verifier>,
}

impl AppState {
    pub fn new(
        hub: Arc<Hub>,
        limits: &crate::server::Limits,
        admission: Arc<crate::server::listen::Admission>,
        trusted_proxies: Vec<IpAddr>,
        verify: crate::server::verify::VerifyConfig,
    ) -> Self {
        AppState {
            verifier: Arc::new(crate::server::verify::Verifier::new(verify)),
            admission,
            trusted_proxies: Arc::new(trusted_proxies),
            hub,
            login_limit: Arc::new(LoginLimiter::default()),
            register_limit: Arc::new(KeyedLimiter::new(
                f64::from(limits.registrations_per_address),
                1.0 / 30.0,
            )),
            register_global: Arc::new(parking_lot::Mutex::new(Bucket::new(
                f64::from(limits.registrations_global),
                5.0,
            ))),
            hashing: Arc::new(HashPool::new(limits.hash_workers, limits.hash_queue)),
        }
    }
}

/// The client's address: the connection's, or — when that is a trusted proxy — the last
/// address in `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    let peer = peer.ip();
    if !trusted.contains(&peer) {
        return peer;
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .collect::<Vec<_>>();
    forwarded.into_iter().rev().find(|ip| !trusted.contains(ip)).unwrap_or(peer)
}

pub(crate) fn too_many(message: &str) -> ApiError {
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited, message)
}

pub(crate) fn busy(e: crate::server::hashing::Busy) -> ApiError {
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited, e.to_string())
}

pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
    field: Option<FieldName>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), field: None }
    }

    /// The error is about this field of the request.
    pub(crate) fn on(mut self, field: FieldName) -> Self {
        self.field = Some(field);
        self
    }
    /// This node of a cluster cannot reach NATS or PostgreSQL: it takes no new logins.
    pub(crate) fn not_ready(hub: &Hub) -> Result<(), Self> {
        match hub.cluster().map(|c| c.ready()) {
            Some(Err(why)) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                format!("{why}: try again in a few seconds (another server of the service may answer)"),
            )),
            _ => Ok(()),
        }
    }

    pub(crate) fn internal(what: &str, e: impl std::fmt::Display) -> Self {
        tracing::error!("{what}: {e}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            format!("{what}; try again later"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            HttpError { error: ErrorBody { code: self.code, message: self.message, field: self.field } };
        (self.status, axum::Json(body)).into_response()
    }
}

pub(crate) type Body = Result<Bytes, BytesRejection>;

/// API POSTs must say they are JSON: a web page can send a "simple" cross-site POST (form or
/// text/plain) to a server on the LAN without the browser asking first, but not this.
fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::BadMessage,
            "send the request as JSON with Content-Type: application/json",
        ))
    }
}

pub(crate) fn parse_body<T: DeserializeOwned>(headers: &HeaderMap, body: Body) -> Result<T, ApiError> {
    require_json(headers)?;
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::TooLarge,
                format!("the request is larger than {MAX_HTTP_BODY_BYTES} bytes"),
            )
        } else {
            ApiError::new(e.status(), ErrorCode::BadMessage, format!("could not read the request: {e}"))
        }
    })?;
    serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadMessage,
            format!("could not read the request: {e}"),
        )
    })
}

fn check_display_name(name: &str) -> Result<String, ApiError> {
    limits::check_name("the display name", name, limits::DISPLAY_NAME_CHARS).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidField, e.to_string())
            .on(FieldName::DisplayName)
    })
}

fn check_device_name(name: Option<&str>) -> Result<Option<String>, ApiError> {
    let Some(name) = name.filter(|n| !n.trim().is_empty()) else {
        return Ok(None);
    };
    limits::check_name("the device name", name, limits::DEVICE_NAME_CHARS).map(Some).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidField, e.to_string())
            .on(FieldName::DeviceName)
    })
}

fn check_password(password: &str) -> Result<(), ApiError> {
    let len = password.chars().count();
    if !(8..=256).contains(&len) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidField,
            "the password must be 8 to 256 characters long",
        )
        .on(FieldName::Password));
    }
    Ok(())
}

fn normalize(hub: &Hub, input: &str, region: Option<&str>) -> Result<number::E164, ApiError> {
    let region = region.unwrap_or(&hub.cfg.default_region);
    number::normalize(input, Some(region)).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidNumber, e.to_string()).on(FieldName::Number)
    })
}

/// A new password's hash, computed on the bounded pool (`429` when it is full).
pub(crate) async fn hash_password(app: &AppState, password: String) -> Result<String, ApiError> {
    app.hashing
        .run(move || auth::hash_password(&password))
        .await
        .map_err(busy)?
        .map_err(|e| ApiError::internal("password hashing failed", e))
}

async fn register(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let req: RegisterRequest = parse_body(&headers, body)?;
    let number = normalize(&app.hub, &req.number, req.region.as_deref())?;
    let display_name = check_display_name(&req.display_name)?;
    check_password(&req.password)?;
    let ip = client_ip(peer, &headers, &app.trusted_proxies);
    if !app.register_limit.check(&ip) {
        app.hub.metrics.registrations.get_or_create(&vec![("result", "rate_limited")]).inc();
        return Err(too_many("too many new accounts from your address: try again in a minute"));
    }
    if !app.register_global.lock().take(std::time::Instant::now()) {
        app.register_limit.refund(&ip);
        app.hub.metrics.registrations.get_or_create(&vec![("result", "rate_limited")]).inc();
        return Err(too_many("the server takes many new accounts right now: try again in a few seconds"));
    }
    if app.verifier.enabled() {
        return crate::server::verify::start(&app, number.to_string(), display_name, req.password, ip).await;
    }
    let hash = hash_password(&app, req.password).await?;
    match app.hub.store.create_user(number.as_str(), &display_name, &hash).await {
        Ok(user) => {
            tracing::info!(number = %user.number, "account registered");
            app.hub.metrics.registrations.get_or_create(&vec![("result", "ok")]).inc();
            let body = RegisterResponse { number: user.number, display_name: user.display_name };
            Ok((StatusCode::CREATED, axum::Json(body)).into_response())
        }
        Err(StoreError::Exists(n)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::AccountExists,
            format!("an account for {n} exists already: log in instead"),
        )),
        Err(e) => Err(ApiError::internal("could not save the account", e)),
    }
}

async fn login(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let req: LoginRequest = parse_body(&headers, body)?;
    ApiError::not_ready(&app.hub)?;
    let number = normalize(&app.hub, &req.number, req.region.as_deref())?;
    let device_name = check_device_name(req.device_name.as_deref())?;
    let observed_ip = client_ip(peer, &headers, &app.trusted_proxies);
    let user = app
        .hub
        .store
        .user_by_number(number.as_str())
        .await
        .map_err(|e| ApiError::internal("could not read the account", e))?;
    let attempt = match app.login_limit.admit(number.as_str(), observed_ip, false) {
        Err(LoginRefusal::Number) => match &user {
            Some(u) if app.hub.store.known_address(u.id, observed_ip).await.unwrap_or(false) => {
                app.login_limit.admit(number.as_str(), observed_ip, true)
            }
            _ => Err(LoginRefusal::Number),
        },
        other => other,
    };
    let attempt = attempt.map_err(|why| {
        app.hub.metrics.logins.get_or_create(&vec![("result", "rate_limited")]).inc();
        tracing::info!(number = %number, %observed_ip, ?why, "login refused: too many failures");
        too_many("too many failed logins: wait a minute and try again")
    })?;
    let password = req.password;
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let ok = app
        .hashing
        .run(move || match stored {
            Some(hash) => auth::verify_password(&password, &hash),
            None => {
                auth::verify_dummy(&password);
                false
            }
        })
        .await;
    let ok = match ok {
        Ok(ok) => ok,
        Err(e) => {
            // Not checked, so not a failure.
            app.login_limit.succeeded(attempt);
            return Err(busy(e));
        }
    };
    let user = match user {
        Some(u) if ok => u,
        _ => {
            app.hub.metrics.logins.get_or_create(&vec![("result", "wrong_credentials")]).inc();
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::WrongCredentials,
                "wrong phone number or password",
            ));
        }
    };
    app.login_limit.succeeded(attempt);
    let token = auth::new_token();
    let device_id = app
        .hub
        .store
        .create_device(user.id, &auth::token_hash(&token), device_name.as_deref(), req.device_ip, observed_ip)
        .await
        .map_err(|e| ApiError::internal("could not save the login", e))?;
    app.hub.metrics.logins.get_or_create(&vec![("result", "ok")]).inc();
    tracing::info!(number = %user.number, device_id, %observed_ip, device_ip = ?req.device_ip, "login");
    Ok(axum::Json(LoginResponse {
        token,
        device_id,
        number: user.number,
        display_name: user.display_name,
        observed_ip,
    })
    .into_response())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")
}

async fn logout(State(app): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let Some(token) = bearer(&headers) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::NotAuthenticated,
            "send Authorization: Bearer TOKEN",
        ));
    };
    let found = app
        .hub
        .store
        .device_by_token(&auth::token_hash(token))
        .await
        .map_err(|e| ApiError::internal("could not read the login", e))?;
    let Some((device, _)) = found else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::AuthFailed,
            "unknown or revoked token",
        ));
    };
    app.hub
        .store
        .delete_device(device.id)
        .await
        .map_err(|e| ApiError::internal("could not remove the login", e))?;
    app.hub.kick(device.id, "logged out");
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn healthz(State(app): State<AppState>) -> Response {
    let pbx = app.hub.pbx.read().as_ref().map(|p| match p.health() {
        crate::server::pbx::PbxHealth::Ready => "ok".to_string(),
        crate::server::pbx::PbxHealth::Connecting => "connecting".to_string(),
        crate::server::pbx::PbxHealth::Down(why) => why,
    });
    let cluster = app.hub.cluster().map(|c| {
        let ready = c.ready();
        let mut peers = c.peers();
        peers.sort();
        let json = serde_json::json!({
            "node": &*c.node,
            "nodes": peers.len() + 1,
            "peers": peers,
            "ready": ready.is_ok(),
            "problem": ready.err(),
        });
        (ready, json)
    });
    if let Some((Err(why), json)) = &cluster {
        tracing::warn!("health check: {why}");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"status": why, "cluster": json})),
        )
            .into_response();
    }
    match app.hub.store.user_count().await {
        Ok(users) => axum::Json(serde_json::json!({
            "status": "ok",
            "version": env!("CARGO_PKG_VERSION"),
            "users": users,
            "online_devices": app.hub.online_devices(),
            "pbx": pbx,
            "cluster": cluster.map(|(_, json)| json),
        }))
        .into_response(),
        Err(e) => {
            tracing::error!("health check: database unavailable: {e}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({"status": "database unavailable"})),
            )
                .into_response()
        }
    }
}

async fn metrics(State(app): State<AppState>) -> Response {
    if let Some(c) = app.hub.cluster() {
        c.refresh_metrics();
    }
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        app.hub.metrics.render(),
    )
        .into_response()
}

async fn websocket(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if let Err(e) = ApiError::not_ready(&app.hub) {
        return e.into_response();
    }
    if !app.admission.room_for_long_lived() {
        app.hub.metrics.connections_refused.get_or_create(&vec![("reason", "websocket_headroom")]).inc();
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal,
            "the server is full: try again in a minute",
        )
        .into_response();
    }
    let hub = app.hub.clone();
    let ip: IpAddr = client_ip(peer, &headers, &app.trusted_proxies);
    // The relay is advertised at the name the client reached this server by.
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(crate::server::relay::host_of);
    crate::server::ws::configure(upgrade)
        .on_failed_upgrade(|e| tracing::debug!("websocket upgrade failed: {e}"))
        .on_upgrade(move |socket| crate::server::ws::connection(hub, socket, ip, host))
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, ErrorCode::BadMessage, "no such endpoint: see PROTOCOL.md")
}

pub fn router(state: AppState, body_timeout: std::time::Duration) -> Router {
    Router::new()
        .route(crate::protocol::REGISTER_PATH, post(register))
        .route(crate::protocol::VERIFY_PATH, post(crate::server::verify::verify))
        .route(crate::protocol::LOGIN_PATH, post(login))
        .route(crate::protocol::LOGOUT_PATH, post(logout))
        .route(crate::protocol::WS_PATH, get(websocket))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_HTTP_BODY_BYTES))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(body_timeout))
        .with_state(state)
}
