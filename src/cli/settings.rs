//! `sidecall settings`.

use super::online::{connect, print_event};
use super::{Cli, Exit, Failure, Output, SettingsArgs, fail};
use crate::client::Event;
use std::time::Duration;

pub(super) async fn settings(cli: &Cli, args: &SettingsArgs) -> Result<Exit, Failure> {
    let output = Output { json: false, connect_timeout: 15 };
    let mut online = connect(cli, &output).await?;
    if let Some(ext) = &args.extension {
        let ext = Some(ext.trim().to_string()).filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("none"));
        online.handle.set_extension(ext);
        let told = loop {
            match tokio::time::timeout(Duration::from_secs(10), online.events.recv()).await {
                Ok(Some(ev @ Event::Extension { .. })) => {
                    print_event(&output, &ev);
                    break Ok(());
                }
                Ok(Some(Event::Error { message, .. })) => break Err(fail(Exit::Error, message)),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    break Err(fail(Exit::Error, "the server did not confirm the extension"));
                }
            }
        };
        if let Err(e) = told {
            online.close().await;
            return Err(e);
        }
    }
    // With nothing to change this asks for the current values (and prints them).
    online.handle.change_settings(crate::protocol::SettingsChange {
        accepting_sessions: args.accepting.map(Into::into),
        do_not_disturb: args.dnd.map(Into::into),
        hide_address: args.hide_address.map(Into::into),
    });
    let result = loop {
        match tokio::time::timeout(Duration::from_secs(10), online.events.recv()).await {
            Ok(Some(ev @ Event::Settings { .. })) => {
                print_event(&output, &ev);
                break Ok(Exit::Ok);
            }
            Ok(Some(Event::Error { message, .. })) => break Err(fail(Exit::Error, message)),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                break Err(fail(Exit::Error, "the server did not confirm the settings"));
            }
        }
    };
    online.close().await;
    result
}
