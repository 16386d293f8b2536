//! `sidecall cameras`.

use super::{Exit, Failure, fail};

pub(super) async fn cameras(json: bool) -> Result<Exit, Failure> {
    let found = tokio::task::spawn_blocking(crate::media::camera::list)
        .await
        .map_err(|e| fail(Exit::Error, format!("listing cameras failed: {e}")))?
        .map_err(|e| fail(Exit::Error, e.to_string()))?;
    if json {
        println!("{}", serde_json::to_string(&found).unwrap_or_default());
    } else if found.is_empty() {
        eprintln!("{}", crate::media::camera::NO_CAMERA);
        eprintln!("(`--video test-pattern` sends the built-in test picture instead)");
    } else {
        for c in &found {
            println!("camera:{}  {}  {}", c.index, c.name, c.description);
        }
    }
    Ok(Exit::Ok)
}
