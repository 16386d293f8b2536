//! Notifications on a real notification daemon: Debian's `dunst`, on a D-Bus session bus and
//! an X display (Xvfb) of the test's own. The request's notification carries Accept and
//! Decline; Accept is invoked the way a user does it in dunst (its action menu), and the
//! session starts; a request that stops ringing takes its notification away.
//! Skipped with a notice where Xvfb, dbus-daemon or dunst is missing.

use crate::cli::{Proc, app};
use crate::fixture::*;
use sidecall::client::Event;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A child process killed when the test ends.
struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn dunstctl(bus: &str, args: &[&str]) -> String {
    let out =
        Command::new("dunstctl").args(args).env("DBUS_SESSION_BUS_ADDRESS", bus).output().expect("dunstctl");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ok() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_request_is_accepted_from_its_notification_and_withdrawn_when_it_stops_ringing() {
    if !["Xvfb", "dbus-daemon", "dunst", "dunstctl"].iter().all(|p| have(p)) {
        eprintln!(
            "NOTICE: notification test skipped: it needs Xvfb, dbus-daemon and dunst (packaging/dev.sh test installs them)"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let display = format!(":{}", 100 + std::process::id() % 400);
    let _x = Child(
        Command::new("Xvfb")
            .args([display.as_str(), "-screen", "0", "800x600x24", "-nolisten", "tcp"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb"),
    );
    let mut bus = Command::new("dbus-daemon")
        .args(["--session", "--nofork", "--print-address=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("dbus-daemon");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(bus.stdout.take().expect("stdout")), &mut line)
        .expect("bus address");
    let _bus = Child(bus);
    let address = line.trim().to_string();
    // dunst's action menu runs `dmenu`: this one notes the menu and picks Accept, as a user would.
    let menu = dir.path().join("menu.txt");
    let picker = dir.path().join("pick-accept.sh");
    std::fs::write(
        &picker,
        format!("#!/bin/sh\ncat > '{}'\ngrep -m1 -i accept '{}'\n", menu.display(), menu.display()),
    )
    .expect("picker");
    Command::new("chmod").arg("+x").arg(&picker).status().expect("chmod");
    let rc = dir.path().join("dunstrc");
    std::fs::write(&rc, format!("[global]\n    dmenu = {}\n", picker.display())).expect("dunstrc");
    let _dunst = Child(
        Command::new("dunst")
            .arg("-config")
            .arg(&rc)
            .env("DISPLAY", &display)
            .env("DBUS_SESSION_BUS_ADDRESS", &address)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dunst"),
    );
    wait_for("dunst on the bus", || dunstctl(&address, &["is-paused"]) == "false");

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    let server = rt.block_on(TestServer::start());
    let mut bob = rt.block_on(server.user(BOB, "Bob"));
    rt.block_on(server.account(ALICE, "Alice"));
    let cfg = dir.path().join("config");
    let login = app(&cfg, "a", &["account", "login", "--server", &server.url, "--number", ALICE])
        .output()
        .expect("login");
    assert!(login.status.success(), "{}", String::from_utf8_lossy(&login.stderr));
    // Alice's core without a window: requests become notifications.
    let watcher = Proc::spawn(app(&cfg, "a", &["watch", "--json"]).env("DBUS_SESSION_BUS_ADDRESS", &address));
    watcher.wait_line(r#""state":"online""#);

    bob.handle.dial(ALICE, sidecall::protocol::Offer::default());
    wait_for("the notification shown", || dunstctl(&address, &["count", "displayed"]) == "1");
    // Accept, from the notification's action menu.
    dunstctl(&address, &["action", "0"]);
    let (sid, _, _) = rt.block_on(bob.started());
    let offered = std::fs::read_to_string(&menu).expect("dunst offered the actions");
    assert!(offered.contains("Accept") && offered.contains("Decline"), "{offered}");
    wait_for("the notification gone after the answer", || dunstctl(&address, &["count", "displayed"]) == "0");
    bob.handle.end(&sid);
    rt.block_on(bob.ended());

    // A request that stops ringing (Bob cancels) takes its notification away.
    bob.handle.dial(ALICE, sidecall::protocol::Offer::default());
    let pending = rt.block_on(bob.expect("pending", |e| match e {
        Event::DialPending { session_id, .. } => Some(session_id.clone()),
        _ => None,
    }));
    wait_for("the second notification shown", || dunstctl(&address, &["count", "displayed"]) == "1");
    bob.handle.end(&pending);
    wait_for("the notification withdrawn", || dunstctl(&address, &["count", "displayed"]) == "0");
    drop(watcher);
}
