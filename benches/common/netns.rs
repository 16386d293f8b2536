//! Two network namespaces joined by a veth pair, for runs over a limited link (root only):
//! "far" (the server, the receiver) and "home" (the sender), with `tc tbf` on the home side's
//! upload. Removed when dropped.

use super::{APP, Proc, SERVER};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub const FAR_IP: &str = "10.97.0.1";
const HOME_IP: &str = "10.97.0.2";

fn sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

pub struct Netns {
    prefix: String,
    root: PathBuf,
}

impl Netns {
    pub fn build(root: &Path) -> Result<Netns, String> {
        let n = Netns { prefix: format!("bv{}", std::process::id() % 100_000), root: root.to_path_buf() };
        for side in ["far", "home"] {
            sh(&["ip", "netns", "add", &n.ns(side)])?;
            sh(&["ip", "-n", &n.ns(side), "link", "set", "lo", "up"])?;
        }
        let (far_dev, home_dev) = (format!("{}f", n.prefix), n.home_dev());
        sh(&["ip", "link", "add", &far_dev, "type", "veth", "peer", "name", &home_dev])?;
        for (dev, side, ip) in [(&far_dev, "far", FAR_IP), (&home_dev, "home", HOME_IP)] {
            sh(&["ip", "link", "set", dev, "netns", &n.ns(side)])?;
            sh(&["ip", "-n", &n.ns(side), "addr", "add", &format!("{ip}/24"), "dev", dev])?;
            sh(&["ip", "-n", &n.ns(side), "link", "set", dev, "up"])?;
        }
        Ok(n)
    }

    fn ns(&self, side: &str) -> String {
        format!("{}-{side}", self.prefix)
    }

    fn home_dev(&self) -> String {
        format!("{}h", self.prefix)
    }

    /// Limits the home side's upload to `kbit` kbit/s (a 150 ms queue), or lifts the limit.
    pub fn limit(&self, kbit: Option<u64>) -> Result<(), String> {
        let ns = self.ns("home");
        let dev = self.home_dev();
        let _ = sh(&["ip", "netns", "exec", &ns, "tc", "qdisc", "del", "dev", &dev, "root"]);
        match kbit {
            Some(k) => sh(&[
                "ip",
                "netns",
                "exec",
                &ns,
                "tc",
                "qdisc",
                "add",
                "dev",
                &dev,
                "root",
                "tbf",
                "rate",
                &format!("{k}kbit"),
                "burst",
                "16kb",
                "latency",
                "150ms",
            ]),
            None => Ok(()),
        }
    }

    /// `bin ARGS…` in `side`'s namespace, with the benchmark's profiles.
    pub fn cmd(&self, side: &str, bin: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(side), bin])
            .args(args)
            .env("SIDECALL_CONFIG_DIR", self.root.join("config"))
            .env("SIDECALL_PASSWORD", "benchmark password")
            .env_remove("SIDECALL_RTC_LOOPBACK")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        c
    }

    pub fn app(&self, side: &str, profile: &str, args: &[&str]) -> Command {
        let mut all = vec!["--profile", profile];
        all.extend(args);
        self.cmd(side, APP, &all)
    }

    /// The server on the far side with profiles `a` (home) and `b` (far) registered.
    pub fn server_with_two_accounts(&self) -> Proc {
        let data = self.root.join("server");
        let listen = format!("{FAR_IP}:7480");
        let server = Proc::spawn(&mut self.cmd(
            "far",
            SERVER,
            &[
                "--listen",
                &listen,
                "--no-relay",
                "--verify",
                "none",
                "--log",
                "warn",
                "--data-dir",
                data.to_str().expect("utf-8"),
            ],
        ));
        server.wait_line("listening on", Duration::from_secs(10));
        let url = format!("http://{FAR_IP}:7480");
        for (side, p, n) in [("home", "a", "+4930123456"), ("far", "b", "+4915123456789")] {
            let st = self
                .app(side, p, &["account", "register", "--server", &url, "--number", n, "--name", p])
                .stdout(Stdio::null())
                .status()
                .expect("register");
            assert!(st.success(), "register {p}");
        }
        server
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for side in ["far", "home"] {
            let _ = sh(&["ip", "netns", "del", &self.ns(side)]);
        }
    }
}
