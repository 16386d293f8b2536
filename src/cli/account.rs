//! `sidecall account register|login|logout|show`.

use super::{AccountCmd, Cli, Exit, Failure, LoginArgs, fail, password, profile_path};
use crate::client::api;
use crate::client::config::Profile;
use crate::client::login::{self, LoginParams};
use crate::protocol::{ErrorCode, RegisterAnswer, VerifyAnswer, VerifyMethod};
use std::io::IsTerminal;

fn params(args: &LoginArgs, password: String) -> Result<LoginParams, Failure> {
    let server = api::normalize_server_url(&args.server)?;
    let device_ip = args.device_ip.or_else(|| api::local_ip_towards(&server));
    Ok(LoginParams {
        server,
        number: args.number.clone(),
        password,
        region: args.region.clone(),
        device_ip,
        device_name: args.device_name.clone(),
        pin: args.trust_fingerprint.clone(),
    })
}

/// A server whose certificate nobody vouches for: shows the fingerprint and, in a terminal,
/// asks whether to trust it. `Ok(true)`: trusted (now pinned in `params`).
fn ask_trust(params: &mut LoginParams, e: &api::ApiError) -> Result<bool, Failure> {
    let api::ApiError::Untrusted { url, fingerprint } = e else {
        return Ok(false);
    };
    if !std::io::stdin().is_terminal() {
        return Err(fail(
            Exit::Error,
            format!("{e}. To trust it, run again with --trust-fingerprint {fingerprint}"),
        ));
    }
    eprintln!("The server at {url} has a self-signed certificate.");
    eprintln!("Its fingerprint (SHA-256) is:\n  {fingerprint}");
    eprintln!(
        "Compare it with the one the server shows (sidecall-server prints it at start; the app shows it under Hosting)."
    );
    eprint!("Trust this server? [y/N] ");
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|e| fail(Exit::Error, format!("cannot read the answer: {e}")))?;
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        params.pin = Some(fingerprint.clone());
        Ok(true)
    } else {
        Err(fail(Exit::Cancelled, "not trusted: nothing was sent to the server"))
    }
}

async fn do_login(cli: &Cli, params: &mut LoginParams) -> Result<Exit, Failure> {
    let done = match login::login(params).await {
        Ok(done) => done,
        Err(e) if ask_trust(params, &e)? => login::login(params).await?,
        Err(e) => return Err(e.into()),
    };
    done.profile.save(&profile_path(cli)?)?;
    println!(
        "logged in as {} ({}) on device {}; the server sees this device at {}",
        done.profile.number, done.profile.display_name, done.device_id, done.observed_ip
    );
    Ok(Exit::Ok)
}

/// Sends the code of verification `id` (`None`: waits for an administrator's approval,
/// asking every 5 s) until the number is bound.
async fn verified(
    params: &LoginParams,
    id: &str,
    code: Option<&str>,
) -> Result<crate::protocol::VerifiedResponse, api::ApiError> {
    let mut said_waiting = false;
    loop {
        match login::verify(params, id, code).await? {
            VerifyAnswer::Done(done) => return Ok(done),
            VerifyAnswer::Waiting(w) => {
                if !said_waiting {
                    eprintln!("{}… (Ctrl-C to stop)", w.message);
                    said_waiting = true;
                }
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            }
        }
    }
}

/// A refused verification as the command's failure: an expired one asks to register again.
fn verify_failure(e: api::ApiError) -> Failure {
    match e.code() {
        Some(ErrorCode::WrongCode) => fail(Exit::Error, e.to_string()),
        Some(ErrorCode::CodeExpired) => fail(Exit::VerificationNeeded, e.to_string()),
        _ => e.into(),
    }
}

/// The number is bound: says so, then logs in.
async fn bound(
    cli: &Cli,
    params: &mut LoginParams,
    done: crate::protocol::VerifiedResponse,
) -> Result<Exit, Failure> {
    if done.claimed {
        println!(
            "verified {} ({}): the number's existing account is yours now; its other devices were logged out",
            done.number, done.display_name
        );
    } else {
        println!("verified {} ({})", done.number, done.display_name);
    }
    do_login(cli, params).await
}

/// [`verified`], then logs in.
async fn finish(cli: &Cli, params: &mut LoginParams, id: &str, code: Option<&str>) -> Result<Exit, Failure> {
    let done = verified(params, id, code).await.map_err(verify_failure)?;
    bound(cli, params, done).await
}

pub(super) async fn account(cli: &Cli, cmd: &AccountCmd) -> Result<Exit, Failure> {
    match cmd {
        AccountCmd::Register(args) => {
            let mut params = params(&args.login, password(true)?)?;
            let answer = match login::register(&params, &args.name).await {
                Ok(r) => r,
                Err(e) if ask_trust(&mut params, &e)? => login::register(&params, &args.name).await?,
                Err(e) => return Err(e.into()),
            };
            match answer {
                RegisterAnswer::Done(resp) => {
                    println!("registered {} ({})", resp.number, resp.display_name);
                    do_login(cli, &mut params).await
                }
                RegisterAnswer::Pending(p) => {
                    println!("{}", p.message);
                    let v = p.verification;
                    if v.method == VerifyMethod::Admin {
                        println!("verification id: {}", v.id);
                        return finish(cli, &mut params, &v.id, None).await;
                    }
                    if !std::io::stdin().is_terminal() {
                        println!("verification id: {}", v.id);
                        println!(
                            "finish with: sidecall account verify --server {} --number {} --id {} CODE",
                            params.server, v.number, v.id
                        );
                        return Ok(Exit::VerificationNeeded);
                    }
                    loop {
                        eprint!("Code ({} digits): ", v.digits);
                        let mut code = String::new();
                        let read = std::io::stdin()
                            .read_line(&mut code)
                            .map_err(|e| fail(Exit::Error, format!("cannot read the code: {e}")))?;
                        if read == 0 {
                            return Err(fail(
                                Exit::Cancelled,
                                "no code given: the registration was not finished",
                            ));
                        }
                        match verified(&params, &v.id, Some(code.trim())).await {
                            Ok(done) => return bound(cli, &mut params, done).await,
                            // Another try (the server counts them).
                            Err(e) if e.code() == Some(ErrorCode::WrongCode) => eprintln!("{e}"),
                            Err(e) => return Err(verify_failure(e)),
                        }
                    }
                }
            }
        }
        AccountCmd::Verify(args) => {
            let mut params = params(&args.login, password(false)?)?;
            finish(cli, &mut params, &args.id, args.code.as_deref()).await
        }
        AccountCmd::Login(args) => do_login(cli, &mut params(args, password(false)?)?).await,
        AccountCmd::Logout => {
            let path = profile_path(cli)?;
            let Some(mut profile) = Profile::load(&path)? else {
                println!("not logged in");
                return Ok(Exit::Ok);
            };
            if let Some(token) = profile.token.take() {
                match api::logout(&profile.server, &profile.trust(), &token).await {
                    Ok(()) => {}
                    // Already revoked: forgetting it here is all that is left to do.
                    Err(e) if e.code() == Some(ErrorCode::AuthFailed) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            profile.device_id = None;
            profile.save(&path)?;
            println!("logged out");
            Ok(Exit::Ok)
        }
        AccountCmd::Show => {
            let path = profile_path(cli)?;
            match Profile::load(&path)? {
                Some(p) => {
                    println!("profile:   {}", cli.profile);
                    println!("server:    {}", p.server);
                    println!("number:    {}", p.number);
                    println!("name:      {}", p.display_name);
                    println!(
                        "device ip: {}",
                        p.device_ip.map(|i| i.to_string()).unwrap_or_else(|| "-".into())
                    );
                    if let Some(f) = &p.server_fingerprint {
                        println!("trusted certificate: {f}");
                    }
                    println!("logged in: {}", if p.token.is_some() { "yes" } else { "no" });
                }
                None => println!("profile {} has no login: run `sidecall account login`", cli.profile),
            }
            Ok(Exit::Ok)
        }
    }
}
