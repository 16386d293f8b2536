//! The tray icon over a real D-Bus session bus (`dbus-run-session`): a StatusNotifierWatcher
//! of the test's own (as a desktop's tray host provides) takes the item's registration; the
//! item's icon follows the state; clicking *Do not disturb* in its menu (the dbusmenu `Event`
//! a tray host sends) reaches the core. Skipped with a notice without dbus-run-session.

use sidecall::app::{AppCommand, AppHandle};
use sidecall::ui::tray::{Tray, TrayRequest, TrayState};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Watcher {
    items: Arc<Mutex<Vec<String>>>,
}

#[zbus::interface(name = "org.kde.StatusNotifierWatcher")]
impl Watcher {
    async fn register_status_notifier_item(&self, service: &str) {
        self.items.lock().expect("lock").push(service.to_string());
    }
    async fn register_status_notifier_host(&self, _service: &str) {}
    #[zbus(property)]
    async fn registered_status_notifier_items(&self) -> Vec<String> {
        self.items.lock().expect("lock").clone()
    }
    #[zbus(property)]
    async fn is_status_notifier_host_registered(&self) -> bool {
        true
    }
    #[zbus(property)]
    async fn protocol_version(&self) -> i32 {
        0
    }
}

fn dbus_send(args: &[&str]) -> String {
    let out = Command::new("dbus-send")
        .args(["--session", "--print-reply"])
        .args(args)
        .output()
        .expect("dbus-send");
    assert!(out.status.success(), "dbus-send {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn icon(service: &str) -> String {
    let reply = dbus_send(&[
        &format!("--dest={service}"),
        "/StatusNotifierItem",
        "org.freedesktop.DBus.Properties.Get",
        "string:org.kde.StatusNotifierItem",
        "string:IconName",
    ]);
    reply.split('"').nth(1).unwrap_or_default().to_string()
}

#[test]
fn the_tray_item_registers_shows_the_state_and_its_menu_toggles_do_not_disturb() {
    if std::env::var_os("SIDECALL_TRAY_CHILD").is_some() {
        return child();
    }
    let have = |p: &str| {
        Command::new("sh").args(["-c", &format!("command -v {p}")]).output().is_ok_and(|o| o.status.success())
    };
    if !have("dbus-run-session") || !have("dbus-send") {
        eprintln!("NOTICE: tray test skipped: it needs dbus-run-session and dbus-send (package dbus)");
        return;
    }
    // The same test, on a session bus of its own.
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new("dbus-run-session")
        .arg("--")
        .arg(exe)
        .args([
            "--exact",
            "tray::the_tray_item_registers_shows_the_state_and_its_menu_toggles_do_not_disturb",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SIDECALL_TRAY_CHILD", "1")
        .output()
        .expect("dbus-run-session");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("1 passed"), "{text}");
    assert!(text.contains("tray checked"), "the child ran the checks: {text}");
}

fn child() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    let items = Arc::new(Mutex::new(Vec::new()));
    let _watcher = rt.block_on(async {
        zbus::connection::Builder::session()
            .expect("session bus")
            .name("org.kde.StatusNotifierWatcher")
            .expect("name")
            .serve_at("/StatusNotifierWatcher", Watcher { items: items.clone() })
            .expect("serve")
            .build()
            .await
            .expect("the watcher on the bus")
    });
    let (tx, mut commands) = tokio::sync::mpsc::unbounded_channel();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    let mut tray = Tray::spawn(
        AppHandle::from_sender(tx),
        Arc::new(move |r: TrayRequest| seen.lock().expect("lock").push(r)),
    )
    .expect("tray thread");
    let deadline = Instant::now() + Duration::from_secs(10);
    let service = loop {
        if let Some(s) = items.lock().expect("lock").first().cloned() {
            break s;
        }
        assert!(Instant::now() < deadline, "the item never registered");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(service.starts_with("org.kde.StatusNotifierItem-"), "{service}");
    let wait_icon = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while icon(&service) != want {
            assert!(Instant::now() < deadline, "icon never {want}: {}", icon(&service));
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_icon("user-offline");
    assert!(tray.is_up());
    tray.show(TrayState { online: true, do_not_disturb: false, ringing: 0 });
    wait_icon("user-available");

    // The menu a tray host shows, and a click on "Do not disturb".
    let layout = dbus_send(&[
        &format!("--dest={service}"),
        "/MenuBar",
        "com.canonical.dbusmenu.GetLayout",
        "int32:0",
        "int32:-1",
        "array:string:",
    ]);
    for label in ["Open Sidecall", "Do not disturb", "Quit"] {
        assert!(layout.contains(label), "{label} in the menu: {layout}");
    }
    // The item's id is the last `int32` before its label.
    let before = &layout[..layout.find("Do not disturb").expect("label")];
    let id =
        before.rsplit("int32 ").next().and_then(|r| r.split_whitespace().next()).expect("id").to_string();
    dbus_send(&[
        &format!("--dest={service}"),
        "/MenuBar",
        "com.canonical.dbusmenu.Event",
        &format!("int32:{id}"),
        "string:clicked",
        "variant:int32:0",
        "uint32:0",
    ]);
    let cmd = rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), commands.recv()).await });
    assert!(matches!(cmd, Ok(Some(AppCommand::SetDoNotDisturb(true)))), "{cmd:?}");
    tray.show(TrayState { online: true, do_not_disturb: true, ringing: 0 });
    wait_icon("user-busy");
    // "Open Sidecall" asks the window to show itself.
    let open = layout[..layout.find("Open Sidecall").expect("label")]
        .rsplit("int32 ")
        .next()
        .and_then(|r| r.split_whitespace().next())
        .expect("id")
        .to_string();
    dbus_send(&[
        &format!("--dest={service}"),
        "/MenuBar",
        "com.canonical.dbusmenu.Event",
        &format!("int32:{open}"),
        "string:clicked",
        "variant:int32:0",
        "uint32:0",
    ]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !requests.lock().expect("lock").contains(&TrayRequest::Open) {
        assert!(Instant::now() < deadline, "Open never reached the window");
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("tray checked");
}
