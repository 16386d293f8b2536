//! `sidecall-server`: the registry and signaling server.

use clap::Parser;
use sidecall::protocol::IceServer;
use sidecall::server::{self, ServerConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum RelayPolicy {
    Auto,
    Always,
}

/// Administration of the registry (the server need not run).
#[derive(clap::Subcommand, Debug)]
enum Admin {
    /// Users' settings.
    #[command(subcommand)]
    User(UserCmd),
}

#[derive(clap::Subcommand, Debug)]
enum UserCmd {
    /// Set the extension of NUMBER's phone on the PBX (click-to-call); "-" clears it.
    SetExtension { number: String, extension: String },
    /// Approve the newest registration waiting for NUMBER (--verify admin; an existing
    /// account of the number is claimed by it), or mark NUMBER's account as verified.
    Verify { number: String },
    /// List the registrations waiting for a code or for approval.
    Pending,
}

#[derive(Parser, Debug)]
#[command(name = "sidecall-server", version, about = "Sidecall registry and signaling server")]
struct Args {
    /// Address and port to listen on (0.0.0.0 for the whole LAN).
    #[arg(long, env = "SIDECALL_LISTEN", default_value = "0.0.0.0:7480")]
    listen: SocketAddr,
    /// Folder for the SQLite registry (default: the platform's data folder).
    #[arg(long, env = "SIDECALL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Use this database instead: sqlite://PATH or postgres://USER@HOST/DB.
    #[arg(long, env = "SIDECALL_DATABASE_URL")]
    database_url: Option<String>,
    /// Run as one node of a cluster: nats://HOST:PORT (needs --database-url postgres://…).
    /// Any number of nodes behind a TCP load balancer or DNS round robin.
    #[arg(long, env = "SIDECALL_NATS", value_name = "URL")]
    nats: Option<String>,
    /// Name of the cluster on NATS (its subject prefix): clusters sharing one NATS need
    /// different names.
    #[arg(long, env = "SIDECALL_CLUSTER_NAME", default_value = "sidecall", value_parser = cluster_name)]
    cluster_name: String,
    /// Worker threads (default: one per core). Several nodes on one machine run best with
    /// one each: `--threads 1` runs everything on one thread (tokio's current-thread
    /// runtime), which costs less CPU per request than one worker handed tasks by another.
    #[arg(long, env = "SIDECALL_THREADS")]
    threads: Option<usize>,
    /// Region national numbers are read in when a user gives none (two-letter code).
    #[arg(long, env = "SIDECALL_REGION", default_value = "DE")]
    default_region: String,
    /// Seconds an access request rings before it times out.
    #[arg(long, default_value_t = 30)]
    answer_timeout: u64,
    /// Seconds between pings to each client.
    #[arg(long, default_value_t = 20)]
    heartbeat: u64,
    /// Seconds a device's active sessions wait for it after its connection dropped (its
    /// peer-to-peer connection usually carries on meanwhile).
    #[arg(long, default_value_t = 30)]
    reconnect_grace: u64,
    /// STUN/TURN server URL handed to clients (repeatable), e.g. stun:stun.example.org:3478
    #[arg(long = "ice-server")]
    ice_servers: Vec<String>,
    /// The relay's UDP listener (TURN and STUN) for devices that cannot reach each other.
    #[arg(long, env = "SIDECALL_RELAY_LISTEN", default_value = "0.0.0.0:3478")]
    relay_listen: SocketAddr,
    /// Ports relay allocations use, FIRST-LAST.
    #[arg(long, default_value = "49152-65535", value_parser = parse_ports)]
    relay_ports: (u16, u16),
    /// The relay's public address when this server sits behind a 1:1 NAT.
    #[arg(long)]
    relay_public_ip: Option<std::net::IpAddr>,
    /// Relay towards private, loopback and link-local addresses too (a relay for one LAN).
    #[arg(long)]
    relay_allow_private: bool,
    /// Megabytes per second one user's relayed data may take (each way); beyond it the
    /// relay drops packets, and the user's peers slow down.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    relay_user_rate: u64,
    /// auto: direct first, the relay when that fails or a user hides their address;
    /// always: every session relayed, no address told to anyone.
    #[arg(long, value_enum, default_value_t = RelayPolicy::Auto)]
    relay: RelayPolicy,
    /// No relay: sessions work only where the devices reach each other.
    #[arg(long, conflicts_with_all = ["turn_url", "relay"])]
    no_relay: bool,
    /// Hand out a coturn instead of the built-in relay (repeatable), e.g. turn:turn.example.org:3478
    #[arg(long = "turn-url", requires = "turn_secret")]
    turn_url: Vec<String>,
    /// coturn's static-auth-secret (coturn runs with use-auth-secret).
    #[arg(long, env = "SIDECALL_TURN_SECRET", requires = "turn_url")]
    turn_secret: Option<String>,
    /// Serve HTTPS and WSS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "SIDECALL_TLS_CERT", requires = "tls_key", conflicts_with = "tls_self_signed")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "SIDECALL_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve HTTPS and WSS with a self-signed certificate made in the data folder (clients
    /// pin its fingerprint on first login).
    #[arg(long)]
    tls_self_signed: bool,
    /// A reverse proxy in front of this server (repeatable): its X-Forwarded-For names the
    /// client, and its connections are not capped per address.
    #[arg(long = "trusted-proxy")]
    trusted_proxies: Vec<std::net::IpAddr>,
    /// Open connections one address may hold (NATs put many users behind one).
    #[arg(long, default_value_t = 256)]
    connections_per_address: usize,
    /// Place phone calls through this PBX (click-to-call), e.g.
    /// ami://USER:SECRET@pbx.local:5038?context=from-internal&channel=PJSIP/{ext}
    #[arg(long, env = "SIDECALL_PBX")]
    pbx: Option<String>,
    /// How a number is proven before an account is bound to it: call (the PBX calls it, the
    /// caller ID's last digits are the code), hook (--verify-hook sends the code by SMS or
    /// voice), admin (sidecall-server user verify NUMBER), none (anyone may register any free
    /// number: a closed LAN only).
    #[arg(long, env = "SIDECALL_VERIFY", default_value = "admin", value_parser = ["call", "hook", "admin", "none"])]
    verify: String,
    /// With --verify hook: a command (the number and code are $1 and $2, and
    /// SIDECALL_NUMBER, SIDECALL_CODE, SIDECALL_TEXT) or an http(s) URL that gets them as JSON.
    #[arg(long, env = "SIDECALL_VERIFY_HOOK")]
    verify_hook: Option<String>,
    /// With --verify call: the caller ID's start (E.164) your PBX may send; the code's four
    /// digits are appended, e.g. +4930123456 → +49301234560042.
    #[arg(long, env = "SIDECALL_VERIFY_CALLER_ID")]
    verify_caller_id: Option<String>,
    #[command(subcommand)]
    admin: Option<Admin>,
    /// Log filter, e.g. info or sidecall=debug (RUST_LOG overrides).
    #[arg(long, default_value = "info")]
    log: String,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    sidecall::init_logging(&args.log);
    // One socket per online device: allow as many as the system lets this user have.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!("open-file limit {n}"),
        Err(e) => tracing::warn!("cannot raise the open-file limit: {e}"),
    }
    let data_dir = match args.data_dir.clone().or_else(|| sidecall::data_dir().map(|d| d.join("server"))) {
        Some(d) => d,
        None => {
            eprintln!("sidecall-server: no data folder found for this user: pass --data-dir");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Some(admin) = &args.admin {
        return administer(admin, &args, &data_dir);
    }
    let mut cfg = ServerConfig::new(args.listen, data_dir.clone());
    if let Some(url) = &args.pbx {
        match server::pbx::PbxConfig::parse(url) {
            Ok(p) => cfg.pbx = Some(p),
            Err(e) => {
                eprintln!("sidecall-server: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    cfg.verify = match server::verify::VerifyConfig::parse(
        &args.verify,
        args.verify_hook.as_deref(),
        args.verify_caller_id.as_deref(),
    ) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("sidecall-server: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if cfg.verify.mode == server::verify::VerifyMode::Call && cfg.pbx.is_none() {
        eprintln!("sidecall-server: --verify call places its calls through the PBX: add --pbx");
        return std::process::ExitCode::FAILURE;
    }
    cfg.database_url = args.database_url.clone();
    if let Some(nats) = &args.nats {
        if !args.database_url.as_deref().is_some_and(|u| u.starts_with("postgres")) {
            eprintln!("sidecall-server: --nats runs a cluster node, which needs --database-url postgres://…");
            return std::process::ExitCode::FAILURE;
        }
        cfg.cluster =
            Some(server::cluster::ClusterConfig { nats_url: nats.clone(), name: args.cluster_name.clone() });
    }
    cfg.hub.default_region = args.default_region.to_ascii_uppercase();
    cfg.hub.answer_timeout = Duration::from_secs(args.answer_timeout.max(1));
    cfg.hub.heartbeat = Duration::from_secs(args.heartbeat.max(1));
    cfg.hub.reconnect_grace = Duration::from_secs(args.reconnect_grace);
    if !args.ice_servers.is_empty() {
        cfg.hub.ice_servers =
            vec![IceServer { urls: args.ice_servers.clone(), username: None, credential: None }];
    }
    cfg.hub.relay_always = args.relay == RelayPolicy::Always;
    cfg.relay = if args.no_relay {
        server::RelayMode::Off
    } else if let Some(secret) = args.turn_secret.clone() {
        server::RelayMode::External { urls: args.turn_url.clone(), secret }
    } else {
        server::RelayMode::Own(server::relay::RelayConfig {
            listen: args.relay_listen,
            ports: args.relay_ports.0..=args.relay_ports.1,
            public_ip: args.relay_public_ip,
            allow_private: args.relay_allow_private,
            user_bandwidth: args.relay_user_rate * 1_000_000,
            ..Default::default()
        })
    };
    cfg.trusted_proxies = args.trusted_proxies.clone();
    cfg.limits.connections_per_address = args.connections_per_address.max(1);
    cfg.tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(sidecall::tls::TlsFiles { cert: cert.clone(), key: key.clone() }),
        _ if args.tls_self_signed => match sidecall::tls::self_signed(&data_dir) {
            Ok(files) => Some(files),
            Err(e) => {
                eprintln!("sidecall-server: {e}");
                return std::process::ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    // One thread: a current-thread runtime, which hands tasks to no other thread (several
    // nodes on one machine spend less CPU per request so).
    let mut builder = match args.threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n.max(1));
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sidecall-server: cannot start: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match server::start(cfg).await {
            Ok(running) => {
                let where_ = match &args.database_url {
                    Some(_) => "the configured database".to_string(),
                    None => data_dir.join("registry.sqlite3").display().to_string(),
                };
                println!(
                    "sidecall-server {} listening on {} (registry: {where_})",
                    env!("CARGO_PKG_VERSION"),
                    running.url()
                );
                let scheme = if running.fingerprint.is_some() { "https" } else { "http" };
                println!(
                    "clients use: sidecall account register --server {scheme}://<this machine's address>:{} …",
                    running.addr.port()
                );
                if let Some(f) = &running.fingerprint {
                    println!("TLS certificate fingerprint (SHA-256): {f}");
                }
                println!("{}", server::admin::describe_verification(&args.verify));
                match &running.relay {
                    Some(r) => println!("relay (TURN/STUN) on UDP {}", r.local_addr()),
                    None if args.no_relay => println!("no relay (--no-relay)"),
                    None => println!("relay: {}", args.turn_url.join(", ")),
                }
                running.run_until_signal().await;
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sidecall-server: {e}");
                std::process::ExitCode::FAILURE
            }
        }
    })
}

fn administer(admin: &Admin, args: &Args, data_dir: &std::path::Path) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sidecall-server: cannot start: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let db = server::admin::Db { url: args.database_url.clone(), data_dir: data_dir.to_path_buf() };
    let region = args.default_region.to_ascii_uppercase();
    let result = runtime.block_on(async move {
        match admin {
            Admin::User(UserCmd::SetExtension { number, extension }) => {
                server::admin::set_extension(&db, &region, number, extension).await
            }
            Admin::User(UserCmd::Verify { number }) => server::admin::verify(&db, &region, number).await,
            Admin::User(UserCmd::Pending) => server::admin::pending(&db).await,
        }
    });
    match result {
        Ok(text) => {
            println!("{text}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sidecall-server: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `49152-65535` → (49152, 65535).
fn parse_ports(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("{s:?} is not a port range: write FIRST-LAST, e.g. 49152-65535");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b) = (a.trim().parse::<u16>().map_err(|_| bad())?, b.trim().parse::<u16>().map_err(|_| bad())?);
    if a == 0 || a > b {
        return Err(bad());
    }
    Ok((a, b))
}

/// A cluster name is a NATS subject token: letters, digits, `-` and `_`.
fn cluster_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok { Ok(s.to_string()) } else { Err("use 1 to 64 letters, digits, '-' or '_'".into()) }
}
