//! Video end to end as a user runs it: two `sidecall` processes through a real
//! `sidecall-server`, real WebRTC (loopback), H.264 test pattern both ways.

use super::cli::{Pair, Proc, file_with};
use serde_json::Value;

/// The `video_stats` lines of a JSON run, in order.
fn stats(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "video_stats")
        .collect()
}

fn last_final(lines: &[String]) -> Value {
    stats(lines)
        .into_iter()
        .rev()
        .find(|v| v["final"] == true)
        .unwrap_or_else(|| panic!("no final stats in {lines:#?}"))
}

fn n(v: &Value, path: &[&str]) -> u64 {
    let mut v = v;
    for p in path {
        v = &v[*p];
    }
    v.as_u64().unwrap_or_else(|| panic!("{path:?} is not a number in {v}"))
}

/// Frame counters read from the decoded pictures go up from one stats line to the next.
fn assert_counters_increase(lines: &[String], who: &str) {
    let counters: Vec<u64> = stats(lines)
        .iter()
        .filter(|v| v["final"] == false)
        .filter_map(|v| v["receiving"]["last_counter"].as_u64())
        .collect();
    assert!(counters.len() >= 3, "{who}: counters over several seconds: {counters:?}");
    assert!(counters.windows(2).all(|w| w[1] > w[0]), "{who}: the stream never freezes: {counters:?}");
}

/// Bob listening (accepting everything, once, JSON lines) with `extra` options.
fn listener(pair: &Pair, extra: &[&str]) -> Proc {
    let mut args = vec!["listen", "--accept", "all", "--once", "--json"];
    args.extend(extra);
    let p = Proc::spawn(&mut pair.cmd("b", &args));
    p.wait_line(r#""event":"online""#);
    p
}

const VIDEO: [&str; 7] =
    ["--video", "test-pattern", "--video-size", "640x480", "--video-stats", "--json", "--no-files"];

#[test]
fn test_pattern_video_flows_both_ways_and_decodes_with_increasing_frames() {
    let pair = Pair::new();
    let mut listener =
        listener(&pair, &["--video", "test-pattern", "--video-size", "640x480", "--video-stats"]);
    let mut args = vec!["dial", "0151 2345 6789", "--hangup-after", "5"];
    args.extend(VIDEO);
    let out = pair.cmd("a", &args).output().expect("dial");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let dial_lines: Vec<String> = stdout.lines().map(String::from).collect();
    let listen_lines = listener.rest(15);
    assert_eq!(listener.wait_exit(), 0);
    for (who, lines) in [("caller", &dial_lines), ("callee", &listen_lines)] {
        let f = last_final(lines);
        let decoded = n(&f, &["receiving", "frames_decoded"]);
        // 5 s at 30 fps is 150; a debug build on a busy 2-core machine does fewer.
        assert!(decoded >= 40, "{who} decoded {decoded}: {f}");
        assert_eq!((n(&f, &["receiving", "width"]), n(&f, &["receiving", "height"])), (640, 480), "{who}");
        assert_eq!(n(&f, &["receiving", "counter_stalls"]), 0, "{who}: {f}");
        assert!(n(&f, &["sending", "frames_sent"]) >= 40, "{who} sent: {f}");
        assert!(f["receiving"]["latency_p50_ms"].as_f64().is_some(), "{who} measured latency: {f}");
        assert_counters_increase(lines, who);
    }
    assert!(stdout.contains(r#""video":"remote_started""#), "{stdout}");
    assert!(stdout.contains(r#""video":"sending_started""#), "{stdout}");
}

#[test]
fn a_lost_packet_is_recovered_by_a_keyframe_request() {
    let pair = Pair::new();
    let mut listener = listener(&pair, &["--video-stats", "--simulate-video-loss", "2"]);
    let mut args = vec!["dial", "0151 2345 6789", "--hangup-after", "5"];
    args.extend(VIDEO);
    let out = pair.cmd("a", &args).output().expect("dial");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let lines = listener.rest(15);
    assert_eq!(listener.wait_exit(), 0);
    let f = last_final(&lines);
    assert!(n(&f, &["receiving", "lost_packets"]) >= 1, "the loss was noticed: {f}");
    assert!(n(&f, &["receiving", "keyframe_requests_sent"]) >= 1, "a keyframe was asked for: {f}");
    assert!(n(&f, &["receiving", "keyframes"]) >= 2, "and came (the first one plus the asked one): {f}");
    assert_counters_increase(&lines, "callee");
    // Pictures kept coming after the loss (at 2 s): the first figures that show it, then at
    // least half a second more of pictures by the end.
    let all = stats(&lines);
    let at_loss = all
        .iter()
        .find(|v| n(v, &["receiving", "lost_packets"]) >= 1)
        .map(|v| n(v, &["receiving", "frames_decoded"]))
        .expect("figures that show the loss");
    let end = n(&f, &["receiving", "frames_decoded"]);
    assert!(end >= at_loss + 15, "decoding went on after the loss: {at_loss} then {end}");
    // The sender heard the request (the RTCP reached its application) and made a keyframe.
    let s = last_final(&stdout.lines().map(String::from).collect::<Vec<_>>());
    assert!(n(&s, &["sending", "keyframe_requests"]) >= 1, "{s}");
    assert!(n(&s, &["sending", "keyframes_sent"]) >= 2, "{s}");
}

#[test]
fn without_a_camera_the_session_says_so_and_files_still_flow() {
    let pair = Pair::new();
    let inbox = pair.root.join("inbox");
    let mut listener = listener(&pair, &["--save-dir", inbox.to_str().expect("utf-8")]);
    let file = pair.root.join("notes.bin");
    file_with(&file, 50_000, 3);
    // No camera on this machine: camera:7 cannot be opened.
    let out = pair
        .cmd("a", &["dial", "0151 2345 6789", "--video", "camera:7", "--send", file.to_str().expect("utf-8")])
        .output()
        .expect("dial");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("no video sent: cannot open camera 7"), "{stderr}");
    assert!(stderr.contains("--video test-pattern"), "the test pattern is offered: {stderr}");
    assert_eq!(
        std::fs::read(inbox.join("notes.bin")).expect("file arrived"),
        std::fs::read(&file).expect("src")
    );
    listener.rest(15);
    assert_eq!(listener.wait_exit(), 0);

    // `sidecall cameras` explains there is none.
    let out = pair.cmd("a", &["cameras"]).output().expect("cameras");
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no camera found") && stderr.contains("test-pattern"), "{stderr}");
}

#[test]
fn video_can_start_in_a_session_that_did_not_offer_it() {
    let pair = Pair::new();
    // Bob sends video although Alice's request offered only files.
    let mut listener = listener(&pair, &["--video", "test-pattern", "--video-size", "320x240"]);
    let out = pair
        .cmd("a", &["dial", "0151 2345 6789", "--json", "--video-stats", "--hangup-after", "3"])
        .output()
        .expect("dial");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(r#""offer":{"files":true,"video":false}"#), "not offered: {stdout}");
    let f = last_final(&stdout.lines().map(String::from).collect::<Vec<_>>());
    assert!(n(&f, &["receiving", "frames_decoded"]) >= 20, "Alice sees Bob's video: {f}");
    assert_eq!((n(&f, &["receiving", "width"]), n(&f, &["receiving", "height"])), (320, 240));
    assert!(f["sending"].is_null(), "Alice sends none: {f}");
    listener.rest(15);
    assert_eq!(listener.wait_exit(), 0);
}
