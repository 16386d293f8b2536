//! `sidecall`: the desktop companion; headless subcommands for scripts and tests.

use clap::Parser;
use sidecall::cli::{Cli, Exit};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if cli.command.is_none() {
        return match sidecall::ui::run(&cli.profile, cli.config_dir.clone()) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sidecall: {e}");
                eprintln!("(no display? the headless commands work anywhere: sidecall --help)");
                std::process::ExitCode::from(Exit::Error as u8)
            }
        };
    }
    let filter = match cli.verbose {
        // The WebRTC stack warns about routine ICE and DTLS details; keep its errors only.
        0 => "warn,rtc_ice=error,rtc_dtls=error,rtc_sctp=error,webrtc=error",
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
