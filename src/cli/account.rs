//! `sidecall account register|login|logout|show`.

use super::{AccountCmd, Cli, Exit, Failure, LoginArgs, password, profile_path};
use crate::client::api;
use crate::client::config::Profile;
use crate::client::login::{self, LoginParams};
use crate::protocol::ErrorCode;

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
    })
}

async fn do_login(cli: &Cli, params: &LoginParams) -> Result<Exit, Failure> {
    let done = login::login(params).await?;
    done.profile.save(&profile_path(cli)?)?;
    println!(
        "logged in as {} ({}) on device {}; the server sees this device at {}",
        done.profile.number, done.profile.display_name, done.device_id, done.observed_ip
    );
    Ok(Exit::Ok)
}

pub(super) async fn account(cli: &Cli, cmd: &AccountCmd) -> Result<Exit, Failure> {
    match cmd {
        AccountCmd::Register(args) => {
            let params = params(&args.login, password(true)?)?;
            let resp = login::register(&params, &args.name).await?;
            println!("registered {} ({})", resp.number, resp.display_name);
            do_login(cli, &params).await
        }
        AccountCmd::Login(args) => do_login(cli, &params(args, password(false)?)?).await,
        AccountCmd::Logout => {
            let path = profile_path(cli)?;
            let Some(mut profile) = Profile::load(&path)? else {
                println!("not logged in");
                return Ok(Exit::Ok);
            };
            if let Some(token) = profile.token.take() {
                match api::logout(&profile.server, &token).await {
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
                    println!("logged in: {}", if p.token.is_some() { "yes" } else { "no" });
                }
                None => println!("profile {} has no login: run `sidecall account login`", cli.profile),
            }
            Ok(Exit::Ok)
        }
    }
}
