//! The HTTP API: registration, login, logout, health, metrics, and the WebSocket upgrade.

use crate::number;
use crate::protocol::{
    ErrorBody, ErrorCode, FieldName, HttpError, LoginRequest, LoginResponse, MAX_HTTP_BODY_BYTES,
    RegisterRequest, RegisterResponse,
};
use crate::server::auth;
use crate::server::hub::Hub;
use crate::server::ratelimit::KeyedLimiter;
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
    /// Failed-login buckets per number and per address.
    pub login_limit: Arc<KeyedLimiter<String>>,
}

pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
    field: Option<FieldName>,
}

impl ApiError {
    fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), field: None }
    }

    /// The error is about this field of the request.
    fn on(mut self, field: FieldName) -> Self {
        self.field = Some(field);
        self
    }
    fn internal(what: &str, e: impl std::fmt::Display) -> Self {
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

type Body = Result<Bytes, BytesRejection>;

fn parse_body<T: DeserializeOwned>(body: Body) -> Result<T, ApiError> {
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
    let name = name.trim();
    let len = name.chars().count();
    if len == 0 || len > 64 || name.chars().any(char::is_control) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidField,
            "the display name must be 1 to 64 characters without control characters",
        )
        .on(FieldName::DisplayName));
    }
    Ok(name.to_string())
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

async fn register(State(app): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let req: RegisterRequest = parse_body(body)?;
    let number = normalize(&app.hub, &req.number, req.region.as_deref())?;
    let display_name = check_display_name(&req.display_name)?;
    check_password(&req.password)?;
    let password = req.password;
    let hash = tokio::task::spawn_blocking(move || auth::hash_password(&password))
        .await
        .map_err(|e| ApiError::internal("password hashing failed", e))?
        .map_err(|e| ApiError::internal("password hashing failed", e))?;
    match app.hub.store.create_user(number.as_str(), &display_name, &hash).await {
        Ok(user) => {
            tracing::info!(number = %user.number, "account registered");
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
    body: Body,
) -> Result<Response, ApiError> {
    let req: LoginRequest = parse_body(body)?;
    let number = normalize(&app.hub, &req.number, req.region.as_deref())?;
    let observed_ip = peer.ip();
    if !app.login_limit.check(&number.to_string()) || !app.login_limit.check(&observed_ip.to_string()) {
        app.hub.metrics.logins.get_or_create(&vec![("result", "rate_limited")]).inc();
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            "too many login attempts: wait a minute and try again",
        ));
    }
    let user = app
        .hub
        .store
        .user_by_number(number.as_str())
        .await
        .map_err(|e| ApiError::internal("could not read the account", e))?;
    let password = req.password;
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let ok = tokio::task::spawn_blocking(move || match stored {
        Some(hash) => auth::verify_password(&password, &hash),
        None => {
            auth::verify_dummy(&password);
            false
        }
    })
    .await
    .map_err(|e| ApiError::internal("password check failed", e))?;
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
    let device_name =
        req.device_name.map(|n| n.chars().filter(|c| !c.is_control()).take(64).collect::<String>());
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
    match app.hub.store.user_count().await {
        Ok(users) => axum::Json(serde_json::json!({
            "status": "ok",
            "version": env!("CARGO_PKG_VERSION"),
            "users": users,
            "online_devices": app.hub.online_devices(),
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
    let hub = app.hub.clone();
    let ip: IpAddr = peer.ip();
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

pub fn router(state: AppState) -> Router {
    Router::new()
        .route(crate::protocol::REGISTER_PATH, post(register))
        .route(crate::protocol::LOGIN_PATH, post(login))
        .route(crate::protocol::LOGOUT_PATH, post(logout))
        .route(crate::protocol::WS_PATH, get(websocket))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_HTTP_BODY_BYTES))
        .with_state(state)
}
