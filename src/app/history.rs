//! The history of requests and sessions: kept newest first, capped, saved as JSON.

use super::settings::write_atomic;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Incoming,
    Outgoing,
}

/// How a past request or session went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum HistoryOutcome {
    /// Accepted; lasted this many seconds.
    Completed {
        seconds: u64,
    },
    Declined,
    /// Incoming, never answered here.
    Missed,
    /// Outgoing, never answered there.
    NoAnswer,
    Unavailable,
    Cancelled,
    Failed {
        reason: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Unix seconds.
    pub at: u64,
    pub direction: Direction,
    pub number: String,
    pub name: Option<String>,
    pub outcome: HistoryOutcome,
    /// Incoming: whether the server had verified the caller's number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
    /// Incoming: what the phone line said about the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_match: Option<crate::calls::linked::CallMatch>,
}

/// Most history entries kept.
pub const HISTORY_LIMIT: usize = 500;

/// Puts `entry` first and forgets the oldest beyond [`HISTORY_LIMIT`].
pub fn add(history: &mut Vec<HistoryEntry>, entry: HistoryEntry) {
    history.insert(0, entry);
    history.truncate(HISTORY_LIMIT);
}

/// The saved history; a damaged file starts a new one (and says so in the log).
pub fn load(path: &Path) -> Vec<HistoryEntry> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!("{} is damaged ({e}); starting a new history", path.display());
            Vec::new()
        }),
        Err(_) => Vec::new(),
    }
}

pub fn save(path: &Path, history: &[HistoryEntry]) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(history).map_err(|e| std::io::Error::other(e.to_string()))?;
    write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(at: u64) -> HistoryEntry {
        HistoryEntry {
            at,
            direction: Direction::Incoming,
            verified: None,
            call_match: None,
            number: "+4915123456789".into(),
            name: None,
            outcome: HistoryOutcome::Missed,
        }
    }

    #[test]
    fn newest_first_and_capped() {
        let mut h = Vec::new();
        for at in 0..(HISTORY_LIMIT as u64 + 20) {
            add(&mut h, entry(at));
        }
        assert_eq!(h.len(), HISTORY_LIMIT);
        assert_eq!(h[0].at, HISTORY_LIMIT as u64 + 19);
        assert_eq!(h.last().map(|e| e.at), Some(20));
    }

    #[test]
    fn saved_and_loaded_and_damaged_file_starts_anew() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("h").join("p.json");
        let h = vec![entry(2), entry(1)];
        save(&path, &h).expect("save");
        assert_eq!(load(&path), h);
        std::fs::write(&path, b"{not json").expect("write");
        assert!(load(&path).is_empty());
    }
}
