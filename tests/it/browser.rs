//! Interoperability with a real browser: Debian's Chromium (headless, fake camera) is the
//! callee of a Sidecall session. It speaks our signaling from `browser_peer.html`, answers
//! the offer with its own H.264 camera track, and both sides decode the other's pictures.
//! Chromium comes from `packaging/dev.sh test`; elsewhere the test says it is skipped (and
//! fails under CI, where it must run).

use super::cli::{Pair, Proc};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn chromium() -> Option<&'static str> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().find(|p| std::path::Path::new(p).exists())
}

#[test]
fn a_browser_callee_exchanges_h264_video_with_sidecall() {
    let Some(browser) = chromium() else {
        assert!(std::env::var("CI").is_err(), "CI expects Chromium (packaging/dev.sh test installs it)");
        eprintln!(
            "no Chromium here: the browser interoperability test is skipped (packaging/dev.sh test installs it)"
        );
        return;
    };
    let pair = Pair::new();
    let profile = std::fs::read_to_string(pair.cfg.join("profiles/b.toml")).expect("Bob's profile");
    let token = profile
        .lines()
        .find_map(|l| l.strip_prefix("token = \"")?.strip_suffix('"'))
        .expect("a token in Bob's profile")
        .to_string();
    let ws = format!("ws://{}/api/v1/ws", pair.url.trim_start_matches("http://"));
    let page = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/browser_peer.html");
    let log = pair.root.join("chromium.log");
    let mut chrome = Command::new(browser)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", pair.root.join("chromium").display()))
        .arg(format!("file://{}?ws={ws}&token={token}", page.display()))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start Chromium");
    let console = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !console().contains("SIDECALL-BROWSER online as +4915123456789") {
        assert!(Instant::now() < deadline, "the browser never came online:\n{}", console());
        std::thread::sleep(Duration::from_millis(100));
    }

    // Alice dials with the test pattern; the browser accepts and sends its fake camera.
    let mut dial = Proc::spawn(&mut pair.cmd(
        "a",
        &[
            "dial",
            "+49 151 23456789",
            "--json",
            "--video",
            "test-pattern:noisy",
            "--video-size",
            "640x480",
            "--video-stats",
            "--hangup-after",
            "6",
        ],
    ));
    let lines = dial.rest(40);
    let code = dial.wait_exit();
    let _ = chrome.kill();
    let _ = chrome.wait();
    let browser_said: Vec<String> = console()
        .lines()
        .filter_map(|l| {
            l.split_once("SIDECALL-BROWSER ").map(|(_, m)| m.trim_end_matches(['"', ',']).to_string())
        })
        .collect();
    assert_eq!(code, 0, "dial: {lines:#?}\nbrowser: {browser_said:#?}");

    // Sidecall decoded the browser's H.264 pictures.
    let last = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .rfind(|v| v["event"] == "video_stats" && v["final"] == true)
        .unwrap_or_else(|| panic!("no final video figures: {lines:#?}"));
    let decoded = last["receiving"]["frames_decoded"].as_u64().unwrap_or(0);
    assert!(decoded >= 30, "Sidecall decoded {decoded} of the browser's pictures: {last}\n{browser_said:#?}");
    assert_eq!(last["receiving"]["width"], 640, "{last}");
    // Chromium's transport-wide feedback drove our congestion control: the estimate left the
    // rate it starts from (it cannot move without feedback).
    assert!(
        browser_said
            .iter()
            .any(|l| l
                .starts_with("answer congestion control transport-cc with the sequence-number extension")),
        "Chromium negotiates transport-wide congestion control: {browser_said:#?}"
    );
    let estimate = last["sending"]["link_estimate_bps"].as_u64().unwrap_or(0);
    eprintln!("our estimate after 6 s with Chromium's feedback: {estimate} bit/s (starts at 800000)");
    assert!(estimate > 0 && estimate != 800_000, "the browser's feedback moved the estimate: {last}");

    // The browser decoded ours, as H.264 Constrained Baseline (42e01f).
    let inbound: Vec<&String> = browser_said.iter().filter(|l| l.starts_with("inbound")).collect();
    let best =
        inbound.iter().filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok()).max().unwrap_or(0);
    assert!(best >= 60, "the browser decoded {best} of our pictures: {browser_said:#?}");
    assert!(inbound.iter().any(|l| l.contains("profile-level-id=42e01f")), "{inbound:#?}");
    assert!(
        browser_said.iter().any(|l| l.starts_with("outbound") && l.contains("OpenH264")),
        "{browser_said:#?}"
    );
}
