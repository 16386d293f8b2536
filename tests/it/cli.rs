//! The real binaries as a user runs them: `sidecall-server`, then `sidecall account`, `listen`
//! and `dial` in separate processes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const SERVER: &str = env!("CARGO_BIN_EXE_sidecall-server");
const APP: &str = env!("CARGO_BIN_EXE_sidecall");

pub(crate) struct Proc {
    child: Child,
    pub(crate) lines: mpsc::Receiver<String>,
}

impl Proc {
    pub(crate) fn spawn(cmd: &mut Command) -> Proc {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("spawn");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc { child, lines }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a stdout line containing `needle`; returns it.
    pub(crate) fn wait_line(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(line) => seen.push(line),
                Err(_) => panic!("no line with {needle:?}; saw {seen:#?}"),
            }
        }
    }

    /// Every further stdout line until the process closes its output (at most `secs`).
    pub(crate) fn rest(&self, secs: u64) -> Vec<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => out.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => return out,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("output still open after {secs} s: {out:#?}"),
            }
        }
    }

    pub(crate) fn wait_exit(&mut self) -> i32 {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code().unwrap_or(-1);
            }
            assert!(std::time::Instant::now() < deadline, "process did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn app(config: &Path, profile: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(APP);
    cmd.env("SIDECALL_CONFIG_DIR", config)
        .env("SIDECALL_DATA_DIR", config.join("data"))
        .env("SIDECALL_PASSWORD", "correct horse battery")
        .env_remove("RUST_LOG")
        .arg("--profile")
        .arg(profile)
        .args(args)
        .stdin(Stdio::null());
    cmd
}

fn run(config: &Path, profile: &str, args: &[&str]) -> (i32, String, String) {
    let Output { status, stdout, stderr } = app(config, profile, args).output().expect("run sidecall");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

#[test]
fn binaries_register_listen_dial_and_shut_down_gracefully() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Proc::spawn(
        Command::new(SERVER)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--relay-listen",
                "127.0.0.1:0",
                "--verify",
                "none",
                "--log",
                "warn",
            ])
            .arg("--data-dir")
            .arg(dir.path().join("server")),
    );
    let line = server.wait_line("listening on");
    let url = line.split_whitespace().find(|w| w.starts_with("http://")).expect("url in banner").to_string();
    let cfg = dir.path().join("config");

    let (code, out, err) = run(
        &cfg,
        "a",
        &["account", "register", "--server", &url, "--number", "030 123456", "--name", "Alice"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("registered +4930123456"), "{out}");
    let saved = std::fs::read_to_string(cfg.join("profiles/a.toml")).expect("profile saved");
    assert!(
        saved.contains("token") && !saved.contains("correct horse"),
        "token saved, password never: {saved}"
    );
    let (code, out, err) = run(
        &cfg,
        "b",
        &["account", "register", "--server", &url, "--number", "+49 151 23456789", "--name", "Bob"],
    );
    assert_eq!(code, 0, "{out}{err}");
    // Registering again is refused in plain words.
    let (code, _, err) =
        run(&cfg, "c", &["account", "register", "--server", &url, "--number", "030123456", "--name", "X"]);
    assert_eq!(code, 1);
    assert!(err.contains("exists already"), "{err}");

    let mut listener = Proc::spawn(&mut app(&cfg, "b", &["listen", "--accept", "all", "--once", "--json"]));
    listener.wait_line(r#""event":"online""#);

    let (code, out, err) = run(&cfg, "a", &["dial", "0151 2345 6789", "--video", "--hangup-after", "0.3"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("accepted"), "{out}");
    assert!(out.contains("started (you called) with +4915123456789 (Bob)"), "{out}");
    let incoming = listener.wait_line(r#""event":"incoming""#);
    assert!(incoming.contains("+4930123456") && incoming.contains(r#""video":true"#), "{incoming}");
    listener.wait_line(r#""event":"session_ended""#);
    assert_eq!(listener.wait_exit(), 0);

    // Outcomes are exit codes.
    let (code, out, _) = run(&cfg, "a", &["dial", "+49 40 9876543"]);
    assert_eq!(code, 5, "unavailable: {out}");
    let (code, out, _) = run(&cfg, "a", &["dial", "not a number"]);
    assert_eq!(code, 6, "invalid: {out}");
    let (code, _, err) = run(&cfg, "nobody", &["dial", "+4915123456789"]);
    assert_eq!(code, 8, "not logged in: {err}");
    assert!(err.contains("account login"), "{err}");
    let out = app(&cfg, "a", &["account", "login", "--server", &url, "--number", "030 123456"])
        .env("SIDECALL_PASSWORD", "not the password")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(8));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong phone number or password"));

    // Declined, through a listener that declines.
    let mut decliner = Proc::spawn(&mut app(&cfg, "b", &["listen", "--accept", "none", "--once"]));
    decliner.wait_line("listening as");
    let (code, out, _) = run(&cfg, "a", &["dial", "+4915123456789"]);
    assert_eq!(code, 3, "declined: {out}");
    assert_eq!(decliner.wait_exit(), 0);

    // A listener watching the FRITZ!Box: a request no call on the phone vouches for is not
    // accepted automatically; once Alice's call rings there, it is.
    let box_ = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let box_addr = box_.local_addr().expect("addr").to_string();
    let mut watching = Proc::spawn(&mut app(
        &cfg,
        "b",
        &["listen", "--accept", "all", "--once", "--json", "--fritz", &box_addr],
    ));
    let (mut monitor, _) = box_.accept().expect("the listener connects to the call monitor");
    watching.wait_line(r#""event":"online""#);
    let mut dial = Proc::spawn(&mut app(&cfg, "a", &["dial", "+4915123456789", "--hangup-after", "0.3"]));
    let first = watching.wait_line(r#""event":"call_match""#);
    assert!(first.contains(r#""call_match":"not_linked""#), "{first}");
    std::thread::sleep(Duration::from_millis(300));
    use std::io::Write;
    monitor.write_all(b"02.12.26 14:00:00;RING;3;030123456;015123456789;SIP0;\r\n").expect("ring");
    let then = watching.wait_line(r#""event":"call_match""#);
    assert!(then.contains(r#""call_match":"matches""#), "{then}");
    assert_eq!(dial.wait_exit(), 0, "accepted once the call rang");
    watching.wait_line(r#""event":"session_ended""#);
    assert_eq!(watching.wait_exit(), 0);

    // `sidecall watch`: the app's watchers without a window. Alice's FRITZ!Box reports an
    // internal call (no session), then a call to Bob dialed with a carrier prefix and `#`:
    // the session is requested with Bob's real number, and ends when the phone hangs up.
    let box_ = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let box_addr = box_.local_addr().expect("addr").to_string();
    let mut bob_listens =
        Proc::spawn(&mut app(&cfg, "b", &["listen", "--accept", "all", "--once", "--json"]));
    bob_listens.wait_line(r#""event":"online""#);
    let watcher =
        Proc::spawn(&mut app(&cfg, "a", &["watch", "--fritz", &box_addr, "--area-code", "030", "--json"]));
    let (mut monitor, _) = box_.accept().expect("the watcher connects to the call monitor");
    watcher.wait_line(r#""status":"connected""#);
    watcher.wait_line(r#""event":"connection","state":"online""#);
    monitor.write_all(b"02.12.26 15:00:00;CALL;8;11;4930123456;**610;SIP0;\r\n").expect("write");
    let internal = watcher.wait_line(r#""event":"notice""#);
    assert!(internal.contains("Internal call") && internal.contains("**610"), "{internal}");
    monitor.write_all(b"02.12.26 15:00:05;DISCONNECT;8;0;\r\n").expect("write");
    monitor.write_all(b"02.12.26 15:01:00;CALL;9;11;4930123456;01013015123456789#;SIP0;\r\n").expect("write");
    let accepted = watcher.wait_line(r#""status":"accepted""#);
    assert!(accepted.contains("+4915123456789"), "{accepted}");
    bob_listens.wait_line(r#""event":"session_started""#);
    monitor.write_all(b"02.12.26 15:01:30;DISCONNECT;9;25;\r\n").expect("write");
    watcher.wait_line(r#""event":"session_ended""#);
    bob_listens.wait_line(r#""event":"session_ended""#);
    assert_eq!(bob_listens.wait_exit(), 0);
    drop(watcher);

    // SIGTERM: the server says goodbye and exits cleanly.
    let pid = server.child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(status.success());
    assert_eq!(server.wait_exit(), 0);
}

#[test]
fn wrong_password_and_missing_password_are_explained() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("config");
    let mut cmd =
        app(&cfg, "a", &["account", "login", "--server", "http://127.0.0.1:9", "--number", "+4930123456"]);
    cmd.env_remove("SIDECALL_PASSWORD");
    let out = cmd.output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SIDECALL_PASSWORD"));

    let (code, _, err) =
        run(&cfg, "a", &["account", "login", "--server", "http://127.0.0.1:9", "--number", "+4930123456"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot reach the server"), "{err}");
}

/// The ring really goes through cpal to ALSA: ALSA's `file` plugin stands in for a sound card
/// (this machine has none) and records what was played.
#[test]
fn sound_check_plays_the_ring_through_alsa() {
    let dir = tempfile::tempdir().expect("tempdir");
    let raw = dir.path().join("ring.raw");
    let conf = format!(
        "pcm.!default {{\n  type file\n  slave.pcm \"null\"\n  file \"{}\"\n  format \"raw\"\n}}\n",
        raw.display()
    );
    std::fs::write(dir.path().join(".asoundrc"), conf).expect("asoundrc");
    let out = Command::new(APP)
        .env("HOME", dir.path())
        .args(["sound-check", "--seconds", "0.1"])
        .stdin(Stdio::null())
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("played the ring"), "{stdout}");
    let bytes = std::fs::read(&raw).expect("ALSA recorded the output");
    let loud = bytes.iter().take(4 << 20).filter(|b| **b != 0).count();
    assert!(loud > 10_000, "the recording is not silence ({loud} non-zero bytes of {})", bytes.len());
}

/// Two registered profiles against a `sidecall-server` process; WebRTC on loopback only.
pub(crate) struct Pair {
    _dir: tempfile::TempDir,
    pub(crate) root: std::path::PathBuf,
    pub(crate) cfg: std::path::PathBuf,
    pub(crate) url: String,
    server: Proc,
}

/// The server process for a [`Pair`] on `listen` (port 0: any).
fn pair_server(root: &Path, listen: &str) -> Proc {
    Proc::spawn(
        Command::new(SERVER)
            .args([
                "--listen",
                listen,
                "--relay-listen",
                "127.0.0.1:0",
                "--reconnect-grace",
                "3",
                "--verify",
                "none",
                "--log",
                "warn",
                "--data-dir",
            ])
            .arg(root.join("server")),
    )
}

impl Pair {
    pub(crate) fn new() -> Pair {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_path_buf();
        let server = pair_server(&root, "127.0.0.1:0");
        let line = server.wait_line("listening on");
        let url = line.split_whitespace().find(|w| w.starts_with("http://")).expect("url").to_string();
        let cfg = root.join("config");
        for (p, n, name) in [("a", "030 123456", "Alice"), ("b", "+49 151 23456789", "Bob")] {
            let (code, out, err) =
                run(&cfg, p, &["account", "register", "--server", &url, "--number", n, "--name", name]);
            assert_eq!(code, 0, "{out}{err}");
        }
        Pair { _dir: dir, root, cfg, url, server }
    }

    /// Kills the server (SIGKILL: no goodbye to anyone) and starts it again on the same port
    /// and database after `down`.
    pub(crate) fn crash_and_restart_server(&mut self, down: Duration) {
        let _ = self.server.child.kill();
        let _ = self.server.child.wait();
        std::thread::sleep(down);
        let listen = self.url.trim_start_matches("http://").to_string();
        self.server = pair_server(&self.root, &listen);
        self.server.wait_line("listening on");
    }

    pub(crate) fn cmd(&self, profile: &str, args: &[&str]) -> Command {
        let mut c = app(&self.cfg, profile, args);
        c.env("SIDECALL_RTC_LOOPBACK", "1");
        c
    }

    fn listen(&self, inbox: &Path) -> Proc {
        let inbox = inbox.to_str().expect("utf-8 path");
        let p = Proc::spawn(
            &mut self.cmd("b", &["listen", "--accept", "all", "--once", "--json", "--save-dir", inbox]),
        );
        p.wait_line(r#""event":"online""#);
        p
    }
}

pub(crate) fn file_with(path: &Path, len: usize, seed: u32) {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    let data: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    std::fs::write(path, data).expect("write");
}

#[test]
fn files_go_peer_to_peer_through_the_real_server() {
    let pair = Pair::new();
    let src = pair.root.join("src");
    std::fs::create_dir_all(&src).expect("src");
    let names = [("movie.bin", 6_000_000usize), ("notes.txt", 1234), ("empty.dat", 0)];
    for (i, (n, len)) in names.iter().enumerate() {
        file_with(&src.join(n), *len, i as u32 + 1);
    }
    let inbox = pair.root.join("inbox");
    // Bob sends two files back while Alice's arrive.
    let back = [("reply.txt", 2000usize), ("scan.png", 300_000)];
    for (i, (n, len)) in back.iter().enumerate() {
        file_with(&src.join(n), *len, i as u32 + 10);
    }
    let back_paths: Vec<String> = back.iter().map(|(n, _)| src.join(n).display().to_string()).collect();
    let mut largs = vec![
        "listen",
        "--accept",
        "all",
        "--once",
        "--json",
        "--save-dir",
        inbox.to_str().expect("utf-8"),
        "--send",
    ];
    largs.extend(back_paths.iter().map(String::as_str));
    let mut listener = Proc::spawn(&mut pair.cmd("b", &largs));
    listener.wait_line(r#""event":"online""#);
    let alice_inbox = pair.root.join("alice-inbox");
    let files: Vec<String> = names.iter().map(|(n, _)| src.join(n).display().to_string()).collect();
    let mut args =
        vec!["dial", "0151 2345 6789", "--save-dir", alice_inbox.to_str().expect("utf-8"), "--send"];
    args.extend(files.iter().map(String::as_str));
    let out = pair.cmd("a", &args).output().expect("dial");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    for (n, _) in names {
        assert!(stdout.contains(&format!("sent {n}")), "{stdout}");
        let got = std::fs::read(inbox.join(n)).expect("received file");
        assert_eq!(got, std::fs::read(src.join(n)).expect("original"), "{n} byte-identical");
    }
    for (n, _) in back {
        assert!(stdout.contains(&format!("received {n}")), "{stdout}");
        let got = std::fs::read(alice_inbox.join(n)).expect("file sent back");
        assert_eq!(got, std::fs::read(src.join(n)).expect("original"), "{n} byte-identical the other way");
    }
    listener.wait_line(r#""event":"session_ended""#);
    assert_eq!(listener.wait_exit(), 0);
}

#[test]
fn a_transfer_cut_off_midway_resumes_to_an_identical_file() {
    let pair = Pair::new();
    let big = pair.root.join("big.bin");
    file_with(&big, 60_000_000, 7);
    let inbox = pair.root.join("inbox");
    let mut listener = pair.listen(&inbox);
    let mut dial =
        Proc::spawn(&mut pair.cmd("a", &["dial", "+4915123456789", "--send", big.to_str().expect("path")]));
    // Kill the receiving side once bytes are flowing.
    listener.wait_line(r#""way":"receiving""#);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let part = loop {
        let part = std::fs::read_dir(&inbox)
            .ok()
            .and_then(|d| d.flatten().map(|e| e.path()).find(|p| p.to_string_lossy().ends_with(".part")));
        if let Some(p) = part.filter(|p| std::fs::metadata(p).map(|m| m.len() > 2_000_000).unwrap_or(false)) {
            break p;
        }
        assert!(std::time::Instant::now() < deadline, "no partial file grew");
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = listener.child.kill();
    let _ = listener.child.wait();
    assert_eq!(dial.wait_exit(), 1, "the first try is reported undelivered");
    let kept = std::fs::metadata(&part).expect("partial file kept").len();
    assert!(kept > 0);

    // Again: the receiver resumes where it stopped.
    let mut listener = pair.listen(&inbox);
    let out = pair
        .cmd("a", &["dial", "+4915123456789", "--send", big.to_str().expect("path")])
        .output()
        .expect("dial");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let started = listener.wait_line(r#""event":"started""#);
    let offset: u64 =
        serde_json::from_str::<serde_json::Value>(&started).expect("json")["transfer"]["offset"]
            .as_u64()
            .expect("offset");
    assert!(offset > 0 && offset <= kept, "resumed at {offset} of {kept} kept bytes");
    assert_eq!(
        std::fs::read(inbox.join("big.bin")).expect("received"),
        std::fs::read(&big).expect("original")
    );
    assert!(!part.exists(), "the partial file became the file");
    let _ = listener.wait_exit();
}

#[test]
fn a_full_disk_fails_the_file_cleanly_on_both_sides() {
    let pair = Pair::new();
    let inbox = pair.root.join("small-disk");
    std::fs::create_dir_all(&inbox).expect("dir");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&inbox)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: mounting a 2 MB tmpfs needs root (CI runs as root)");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(inbox.clone());
    let big = pair.root.join("too-big.bin");
    file_with(&big, 5_000_000, 3);
    let mut listener = pair.listen(&inbox);
    let out = pair
        .cmd("a", &["dial", "+4915123456789", "--send", big.to_str().expect("path")])
        .output()
        .expect("dial");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("failed too-big.bin: the receiver's disk is full"), "{stdout}");
    let failed = listener.wait_line(r#""event":"failed""#);
    assert!(failed.contains("disk is full"), "{failed}");
    let left: Vec<_> = std::fs::read_dir(&inbox).expect("dir").flatten().collect();
    assert!(left.is_empty(), "nothing half-written is left: {left:?}");
    let _ = listener.wait_exit();
}

/// Resident memory of a process, KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// A 1 GiB file crosses with memory flat on both sides: the send buffer and the receive
/// queue are bounded, and nothing holds the file in memory.
#[test]
fn a_gibibyte_file_moves_without_memory_growth() {
    let pair = Pair::new();
    let big = pair.root.join("one-gib.bin");
    {
        // Mostly zeros (sparse, quick to make), with marks so that misplaced chunks show.
        let f = std::fs::File::create(&big).expect("create");
        f.set_len(1 << 30).expect("size");
        use std::os::unix::fs::FileExt;
        for i in 0..1024u64 {
            f.write_at(&i.to_be_bytes(), i << 20).expect("mark");
        }
    }
    let inbox = pair.root.join("inbox");
    let mut listener = pair.listen(&inbox);
    let mut dial = Proc::spawn(
        &mut pair.cmd("a", &["dial", "+4915123456789", "--json", "--send", big.to_str().expect("path")]),
    );
    dial.wait_line(r#""event":"started""#);
    let (sender, receiver) = (dial.child.id(), listener.child.id());
    let mut samples: Vec<(u64, u64)> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    let done = loop {
        samples.push((rss_kib(sender), rss_kib(receiver)));
        match dial.lines.recv_timeout(Duration::from_millis(250)) {
            Ok(l) if l.contains(r#""event":"completed""#) => break true,
            Ok(l) if l.contains(r#""event":"failed""#) => panic!("{l}"),
            _ => {}
        }
        assert!(std::time::Instant::now() < deadline, "1 GiB did not arrive in 10 minutes");
    };
    assert!(done);
    assert_eq!(dial.wait_exit(), 0);
    let received = inbox.join("one-gib.bin");
    assert_eq!(std::fs::metadata(&received).expect("received").len(), 1 << 30);
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(&received).expect("open");
        let mut b = [0u8; 8];
        for i in [0u64, 1, 511, 1023] {
            f.read_exact_at(&mut b, i << 20).expect("read");
            assert_eq!(u64::from_be_bytes(b), i, "mark {i} in place");
        }
    }
    // Flat memory: the last quarter of the transfer uses no more than the second quarter
    // plus slack, and neither side comes near the size of the file.
    let n = samples.len().max(4);
    let quarter = |k: usize| {
        samples[(n * k / 4).min(samples.len() - 1)..(n * (k + 1) / 4).min(samples.len())]
            .iter()
            .fold((0, 0), |m, s| (m.0.max(s.0), m.1.max(s.1)))
    };
    let (early, late) = (quarter(1), quarter(3));
    let peak = samples.iter().fold((0, 0), |m, s| (m.0.max(s.0), m.1.max(s.1)));
    eprintln!(
        "RSS KiB: second quarter {early:?}, last quarter {late:?}, peak {peak:?} ({} samples)",
        samples.len()
    );
    assert!(
        late.0 <= early.0 + 32 * 1024 && late.1 <= early.1 + 32 * 1024,
        "memory grew: {early:?} -> {late:?}"
    );
    assert!(peak.0 < 256 * 1024 && peak.1 < 256 * 1024, "peak RSS {peak:?} KiB (debug build)");
    let _ = std::fs::remove_file(&received);
    let _ = listener.wait_exit();
}

/// The desktop opens `sidecall tel:…` for a tel: link; with Sidecall already running, the
/// number goes to that instance and the second launch ends at once.
#[test]
fn a_tel_link_launch_hands_the_number_to_the_running_instance() {
    use sidecall::calls::{self, CallEvent, Emitter, Source, WatcherEvent};
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
    let sock = dir.path().join("sidecall").join("sidecall-work.sock");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _guard = rt.enter();
    let server = rt.spawn(calls::tel::serve(sock.clone(), Emitter::new(Source::Tel, tx)));
    rt.block_on(async {
        while !sock.exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let mut cmd = Command::new(APP);
    cmd.env("XDG_RUNTIME_DIR", dir.path())
        .args(["--profile", "work", "tel:+49-151-2345%206789"])
        .stdin(Stdio::null());
    let out = rt
        .block_on(async { tokio::task::spawn_blocking(move || cmd.output()).await })
        .expect("join")
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("handed +49-151-2345 6789 to the running Sidecall")
    );
    let ev = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(5), rx.recv()).await })
        .expect("in time");
    let number = ev.and_then(|e| match e {
        WatcherEvent::Call(_, CallEvent::Outgoing { number, .. }) => Some(number),
        _ => None,
    });
    let number = match number {
        Some(n) => n,
        None => {
            // The first event may be the status; the call follows.
            let ev = rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(5), rx.recv()).await })
                .expect("in time");
            match ev {
                Some(WatcherEvent::Call(_, CallEvent::Outgoing { number, .. })) => number,
                other => panic!("{other:?}"),
            }
        }
    };
    assert_eq!(number, "+49-151-2345 6789");
    server.abort();
}

/// Two files are the same, byte for byte (read in blocks, not whole).
fn same_bytes(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    let (mut fa, mut fb) = (std::fs::File::open(a).expect("open a"), std::fs::File::open(b).expect("open b"));
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = fa.read(&mut ba).expect("read a");
        let mut filled = 0;
        while filled < na {
            let n = fb.read(&mut bb[filled..na]).expect("read b");
            if n == 0 {
                return false;
            }
            filled += n;
        }
        if ba[..na] != bb[..na] {
            return false;
        }
        if na == 0 {
            return fb.read(&mut bb).expect("read b") == 0;
        }
    }
}

/// kill -9 of the server in the middle of a 1 GiB transfer between two CLIs: the peers' own
/// connection carries on, both reconnect and resume the session, and the file arrives whole.
#[test]
fn a_server_killed_mid_transfer_does_not_stop_the_transfer() {
    let mut pair = Pair::new();
    let big = pair.root.join("one-gib.bin");
    {
        let f = std::fs::File::create(&big).expect("create");
        f.set_len(1 << 30).expect("size");
        use std::os::unix::fs::FileExt;
        for i in 0..1024u64 {
            f.write_at(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes(), (i << 20) + i).expect("mark");
        }
    }
    let inbox = pair.root.join("inbox");
    let listener = pair.listen(&inbox);
    let mut dial = Proc::spawn(
        &mut pair.cmd("a", &["dial", "+4915123456789", "--json", "--send", big.to_str().expect("path")]),
    );
    dial.wait_line(r#""event":"started""#);
    // Bytes are flowing: the server dies without a word.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let grown = std::fs::read_dir(&inbox)
            .ok()
            .and_then(|d| d.flatten().map(|e| e.path()).find(|p| p.to_string_lossy().ends_with(".part")))
            .and_then(|p| std::fs::metadata(p).ok())
            .is_some_and(|m| m.len() > 32 << 20);
        if grown {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no transfer under way");
        std::thread::sleep(Duration::from_millis(20));
    }
    pair.crash_and_restart_server(Duration::from_millis(500));
    // Both sides come back online; the transfer completes; the dial ends the session
    // through the restarted server, which knows it again.
    let mut online_again = 0;
    let mut completed = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    while !completed {
        match dial.lines.recv_timeout(Duration::from_millis(250)) {
            Ok(l) if l.contains(r#""event":"online""#) => online_again += 1,
            Ok(l) if l.contains(r#""event":"completed""#) => completed = true,
            Ok(l) if l.contains(r#""event":"failed""#) || l.contains(r#""event":"session_ended""#) => {
                panic!("the transfer stopped: {l}")
            }
            _ => {}
        }
        assert!(std::time::Instant::now() < deadline, "1 GiB did not arrive");
    }
    assert_eq!(dial.wait_exit(), 0, "delivered, and the session ended cleanly");
    assert_eq!(online_again, 1, "the caller reconnected once");
    let seen = listener.rest(15);
    assert!(
        seen.iter().filter(|l| l.contains(r#""event":"online""#)).count() >= 1,
        "the callee reconnected: {seen:#?}"
    );
    assert!(
        seen.iter().any(|l| l.contains(r#""event":"session_ended""#) && l.contains("peer_ended")),
        "{seen:#?}"
    );
    let received = inbox.join("one-gib.bin");
    assert!(same_bytes(&received, &big), "the file arrived byte-identical");
    let _ = std::fs::remove_file(&received);
}

/// `sidecall-server --verify hook` with a script that writes the code to a file, and
/// `--verify admin` (its default) with `user pending` / `user verify`: the CLI registers,
/// is told to finish with the code, finishes, and is logged in.
#[test]
fn the_cli_registers_with_a_code_from_the_hook_and_with_an_administrators_approval() {
    let dir = tempfile::tempdir().expect("tempdir");
    let codes = dir.path().join("codes");
    let hook = format!("echo \"$SIDECALL_CODE\" > '{}'", codes.display());
    let server = Proc::spawn(
        Command::new(SERVER)
            .args(["--listen", "127.0.0.1:0", "--no-relay", "--log", "warn", "--verify", "hook"])
            .args(["--verify-hook", &hook, "--data-dir"])
            .arg(dir.path().join("server")),
    );
    let url = server.wait_line("listening on");
    let url = url.split_whitespace().find(|w| w.starts_with("http://")).expect("url").to_string();
    let cfg = dir.path().join("config");
    let (code, out, err) = run(
        &cfg,
        "a",
        &["account", "register", "--server", &url, "--number", "030 123456", "--name", "Alice"],
    );
    assert_eq!(code, 10, "waits for the code: {out}{err}");
    let id =
        out.lines().find_map(|l| l.strip_prefix("verification id: ")).expect("the id printed").to_string();
    assert!(out.contains("sidecall account verify"), "says how to go on: {out}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let sent = loop {
        if let Ok(c) = std::fs::read_to_string(&codes) {
            break c.trim().to_string();
        }
        assert!(std::time::Instant::now() < deadline, "the hook wrote no code");
        std::thread::sleep(Duration::from_millis(20));
    };
    let verify = |code: &str| {
        run(&cfg, "a", &["account", "verify", "--server", &url, "--number", "030 123456", "--id", &id, code])
    };
    let wrong = if sent == "000000" { "000001" } else { "000000" };
    let (code, out, err) = verify(wrong);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("wrong code"), "{err}");
    let (code, out, err) = verify(&sent);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("verified +4930123456") && out.contains("logged in"), "{out}");
    drop(server);

    // The default: an administrator approves (the CLI waits until then).
    let data = dir.path().join("server2");
    let server = Proc::spawn(
        Command::new(SERVER)
            .args(["--listen", "127.0.0.1:0", "--no-relay", "--log", "warn", "--data-dir"])
            .arg(&data),
    );
    let url = server.wait_line("listening on");
    let url = url.split_whitespace().find(|w| w.starts_with("http://")).expect("url").to_string();
    let banner = server.wait_line("registration:");
    assert!(banner.contains("administrator"), "{banner}");
    let mut waiting = Proc::spawn(&mut app(
        &cfg,
        "b",
        &["account", "register", "--server", &url, "--number", "+49 151 23456789", "--name", "Bob"],
    ));
    waiting.wait_line("verification id: ");
    let admin = |args: &[&str]| {
        let out = Command::new(SERVER)
            .args(["--log", "warn", "--data-dir"])
            .arg(&data)
            .args(args)
            .output()
            .expect("run sidecall-server");
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (ok, listed) = admin(&["user", "pending"]);
    assert!(ok && listed.contains("+4915123456789") && listed.contains("Bob"), "{listed}");
    let (ok, said) = admin(&["user", "verify", "0151 23456789"]);
    assert!(ok && said.contains("approved"), "{said}");
    waiting.wait_line("verified +4915123456789");
    waiting.wait_line("logged in");
    assert_eq!(waiting.wait_exit(), 0);
}
