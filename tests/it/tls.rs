//! HTTPS and WSS on the server's one port; clients verify, or pin a self-signed certificate
//! and refuse it when it changes.

use crate::cli::Proc;
use crate::fixture::*;
use sidecall::client::api::{self, ApiError};
use sidecall::client::tls::Trust;
use sidecall::client::{ClientConfig, Event};
use sidecall::protocol::{LoginRequest, Offer, Outcome};
use std::process::Command;

fn login_req() -> LoginRequest {
    LoginRequest {
        number: ALICE.into(),
        password: PASSWORD.into(),
        region: None,
        device_ip: None,
        device_name: None,
    }
}

async fn tls_server(cert_dir: &std::path::Path) -> TestServer {
    let files = sidecall::tls::self_signed(cert_dir).expect("certificate");
    TestServer::start_with(move |cfg| cfg.tls = Some(files)).await
}

#[tokio::test]
async fn sessions_work_over_https_and_wss_with_a_pinned_certificate() {
    let certs = tempfile::tempdir().expect("tempdir");
    let server = tls_server(certs.path()).await;
    assert!(server.url.starts_with("https://"), "{}", server.url);
    // The fixture's clients pin the server's certificate: login over HTTPS, signaling over WSS.
    let mut alice = server.user(ALICE, "Alice").await;
    let mut bob = server.user(BOB, "Bob").await;
    let req = alice.handle.dial(BOB, Offer::default());
    let (sid, caller, _) = bob.incoming().await;
    assert_eq!(caller.number, ALICE);
    bob.handle.answer(&sid, true);
    assert_eq!(alice.dial_result(req).await, Outcome::Accepted);
    // Plain HTTP on the TLS port is not served.
    let plain = server.url.replacen("https://", "http://", 1);
    assert!(api::login(&plain, &Trust::System, &login_req()).await.is_err());
}

#[tokio::test]
async fn a_self_signed_certificate_needs_trust_and_a_changed_one_is_refused() {
    let certs = tempfile::tempdir().expect("tempdir");
    let mut server = tls_server(certs.path()).await;
    let first = server.running.as_ref().and_then(|r| r.fingerprint.clone()).expect("fingerprint");
    server.account(ALICE, "Alice").await;

    // No authority vouches for it: refused, with the fingerprint to compare.
    match api::login(&server.url, &Trust::System, &login_req()).await {
        Err(ApiError::Untrusted { fingerprint, .. }) => assert_eq!(fingerprint, first),
        other => panic!("expected untrusted, got {other:?}"),
    }
    let pinned = Trust::Pinned(first.clone());
    let token = api::login(&server.url, &pinned, &login_req()).await.expect("pinned login").token;

    // The server comes back with another certificate (someone in between, or a new key).
    std::fs::remove_dir_all(certs.path().join("tls")).expect("remove");
    let files = sidecall::tls::self_signed(certs.path()).expect("new certificate");
    server.stop().await;
    let mut cfg = sidecall::server::ServerConfig::new(server.addr, server._dir.path().join("server"));
    cfg.tls = Some(files);
    server.running = Some(sidecall::server::start(cfg).await.expect("restart"));
    let second = server.running.as_ref().and_then(|r| r.fingerprint.clone()).expect("fingerprint");
    assert_ne!(first, second);

    match api::login(&server.url, &pinned, &login_req()).await {
        Err(ApiError::CertificateChanged { expected, presented, .. }) => {
            assert_eq!((expected, presented), (first.clone(), second));
        }
        other => panic!("expected a changed certificate, got {other:?}"),
    }
    // The connection core stops instead of retrying, and says why.
    let mut cfg = ClientConfig::new(server.url.clone(), token);
    cfg.trust = pinned;
    let (_handle, mut events) = sidecall::client::spawn(cfg, None);
    let reason = tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Some(Event::LoggedOut { reason }) => break reason,
                Some(Event::Online { .. }) => panic!("went online with a changed certificate"),
                Some(_) => continue,
                None => panic!("the core stopped without a reason"),
            }
        }
    })
    .await
    .expect("in time");
    assert!(reason.contains("changed"), "{reason}");
}

#[test]
fn the_cli_logs_in_to_a_self_signed_server_only_with_its_fingerprint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Proc::spawn(
        Command::new(env!("CARGO_BIN_EXE_sidecall-server"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--no-relay",
                "--tls-self-signed",
                "--verify",
                "none",
                "--log",
                "warn",
                "--data-dir",
            ])
            .arg(dir.path().join("server")),
    );
    let url = server.wait_line("listening on");
    let url = url.split_whitespace().find(|w| w.starts_with("https://")).expect("https url").to_string();
    let fingerprint = server.wait_line("fingerprint");
    let fingerprint = fingerprint.rsplit(' ').next().expect("fingerprint").to_string();
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_sidecall"))
            .env("SIDECALL_CONFIG_DIR", dir.path().join("config"))
            .env("SIDECALL_PASSWORD", PASSWORD)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run sidecall")
    };
    let register = ["account", "register", "--server", &url, "--number", ALICE, "--name", "Alice"];
    let out = cli(&register);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&fingerprint) && err.contains("--trust-fingerprint"), "{err}");
    let mut trusted = register.to_vec();
    trusted.extend(["--trust-fingerprint", &fingerprint]);
    let out = cli(&trusted);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cli(&["account", "show"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&fingerprint));
    // Online over WSS with the pinned certificate.
    let out = cli(&["settings"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
