//! `sidecall`: the desktop companion; headless subcommands for scripts and tests.

use clap::Parser;
use sidecall::cli::{Cli, Exit};

fn main() -> std::process::ExitCode {
    sidecall::tls::install_default_provider();
    // `sidecall tel:+49…` (how the desktop opens tel: links): not a subcommand.
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let tel = args.iter().position(|a| {
        let s = a.to_string_lossy().to_ascii_lowercase();
        s.starts_with("tel:") || s.starts_with("callto:")
    });
    let tel = tel.map(|i| args.remove(i).to_string_lossy().into_owned());
    let cli = Cli::parse_from(args);
    let mut pending_tel = None;
    if let Some(uri) = tel {
        let number = match sidecall::calls::tel::parse_tel(&uri) {
            Ok(n) => n,
            Err(e) => {
                eprintln!("sidecall: {e}");
                return std::process::ExitCode::from(Exit::Usage as u8);
            }
        };
        let path = sidecall::calls::tel::socket_path(&cli.profile);
        let handed = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|rt| rt.block_on(sidecall::calls::tel::forward(&path, &number)));
        if let Ok(Ok(())) = handed {
            println!("handed {number} to the running Sidecall");
            return std::process::ExitCode::SUCCESS;
        }
        pending_tel = Some(number);
    }
    if cli.command.is_none() {
        return match sidecall::ui::run(&cli.profile, cli.config_dir.clone(), pending_tel, cli.minimized) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sidecall: {e}");
                eprintln!("(no display? the headless commands work anywhere: sidecall --help)");
                std::process::ExitCode::from(Exit::Error as u8)
            }
        };
    }
    let filter = match cli.verbose {
        // The WebRTC stack warns about routine ICE and DTLS details, and about every second
        // copy of a retransmitted video packet (SRTP "duplicated"); keep its errors only.
        0 => {
            "warn,rtc_ice=error,rtc_dtls=error,rtc_sctp=error,webrtc=error,rtc::peer_connection::handler=error"
        }
        1 => "info,sidecall=info",
        _ => "debug,sidecall=debug",
    };
    sidecall::init_logging(filter);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sidecall: cannot start: {e}");
            return std::process::ExitCode::from(Exit::Error as u8);
        }
    };
    let code = runtime.block_on(sidecall::cli::run(cli));
    // Do not wait for a blocked stdin reader thread.
    runtime.shutdown_background();
    std::process::ExitCode::from(code as u8)
}
