//! `sidecall settings`.

use super::online::{connect, print_event};
use super::{Cli, Exit, Failure, Output, SettingsArgs, fail};
use crate::client::Event;
use std::time::Duration;

pub(super) async fn settings(cli: &Cli, args: &SettingsArgs) -> Result<Exit, Failure> {
    let output = Output { json: false, connect_timeout: 15 };
    let mut online = connect(cli, &output).await?;
    if args.accepting.is_none() && args.dnd.is_none() {
        // `Online` was printed by connect(); ask again to print the current values.
        online.handle.update_settings(None, None);
    } else {
        online.handle.update_settings(args.accepting.map(Into::into), args.dnd.map(Into::into));
    }
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
