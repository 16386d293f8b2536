//! The file-transfer wire format (PROTOCOL.md, "File transfer"): every data-channel message
//! is one byte of kind, then a JSON control message or a chunk of a file.

use bytes::{BufMut, BytesMut};
use serde::{Deserialize, Serialize};

/// A control message (JSON follows).
pub const KIND_CONTROL: u8 = 1;
/// A chunk: file id (u32 BE), offset (u64 BE), bytes.
pub const KIND_CHUNK: u8 = 2;
pub const CHUNK_HEADER: usize = 1 + 4 + 8;
/// Bytes of file per chunk message (the whole message stays within SCTP's default 64 KiB
/// max-message-size, which every WebRTC stack accepts).
pub const CHUNK_BYTES: usize = 64 * 1024 - CHUNK_HEADER;
/// Longest file name kept, in bytes.
pub const MAX_NAME_BYTES: usize = 200;

/// Control messages of the file-transfer protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FileMsg {
    Offer {
        id: u32,
        name: String,
        size: u64,
        sha256: String,
        mime: String,
    },
    /// Send from `offset` (bytes the receiver already holds from an interrupted try).
    Accept {
        id: u32,
        offset: u64,
    },
    Reject {
        id: u32,
        reason: String,
    },
    /// Either side stops a file.
    Cancel {
        id: u32,
        reason: String,
    },
    /// The sender sent the last byte.
    Done {
        id: u32,
    },
    /// The receiver checked the hash and kept the file.
    Verified {
        id: u32,
    },
    /// The receiver could not keep the file.
    Failed {
        id: u32,
        reason: String,
    },
}

/// One data-channel message, read.
#[derive(Debug, PartialEq)]
pub enum Frame<'a> {
    Control(FileMsg),
    Chunk { id: u32, offset: u64, data: &'a [u8] },
}

/// Why a message could not be read.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum WireError {
    #[error("a chunk of {0} bytes is shorter than its header")]
    ShortChunk(usize),
    #[error("unreadable control message: {0}")]
    BadControl(String),
    #[error("unknown message kind {kind} ({len} bytes)")]
    UnknownKind { kind: u8, len: usize },
    #[error("empty message")]
    Empty,
}

/// Reads one message; never panics, whatever the bytes.
pub fn decode(msg: &[u8]) -> Result<Frame<'_>, WireError> {
    match msg.split_first() {
        None => Err(WireError::Empty),
        Some((&KIND_CHUNK, rest)) => {
            let (Some(id), Some(offset), Some(data)) = (rest.get(..4), rest.get(4..12), rest.get(12..))
            else {
                return Err(WireError::ShortChunk(msg.len()));
            };
            let id = u32::from_be_bytes([id[0], id[1], id[2], id[3]]);
            let mut o = [0u8; 8];
            o.copy_from_slice(offset);
            Ok(Frame::Chunk { id, offset: u64::from_be_bytes(o), data })
        }
        Some((&KIND_CONTROL, json)) => {
            serde_json::from_slice(json).map(Frame::Control).map_err(|e| WireError::BadControl(e.to_string()))
        }
        Some((&kind, _)) => Err(WireError::UnknownKind { kind, len: msg.len() }),
    }
}

/// A control message, ready to send.
pub fn control(msg: &FileMsg) -> BytesMut {
    let json = serde_json::to_vec(msg).unwrap_or_default();
    let mut b = BytesMut::with_capacity(1 + json.len());
    b.put_u8(KIND_CONTROL);
    b.extend_from_slice(&json);
    b
}

/// A chunk of file `id` at `offset`, ready to send.
pub fn chunk(id: u32, offset: u64, data: &[u8]) -> BytesMut {
    let mut msg = BytesMut::with_capacity(CHUNK_HEADER + data.len());
    msg.put_u8(KIND_CHUNK);
    msg.put_u32(id);
    msg.put_u64(offset);
    msg.extend_from_slice(data);
    msg
}

/// A file name that is safe to create in the save folder: no path, no control characters,
/// no reserved characters or device names, not hidden, not too long.
pub fn sanitize_name(raw: &str) -> String {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let mut name: String =
        base.chars().map(|c| if c.is_control() || "<>:\"|?*".contains(c) { '_' } else { c }).collect();
    name = name.trim_matches(|c: char| c == '.' || c.is_whitespace()).to_string();
    if name.is_empty() {
        name = "file".into();
    }
    let stem = name.split('.').next().unwrap_or("").to_ascii_uppercase();
    let reserved = matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || ((stem.starts_with("COM") || stem.starts_with("LPT"))
            && stem.len() == 4
            && stem.as_bytes()[3].is_ascii_digit());
    if reserved {
        name = format!("_{name}");
    }
    if name.len() > MAX_NAME_BYTES {
        let ext =
            name.rfind('.').map(|i| name[i..].to_string()).filter(|e| e.len() <= 16).unwrap_or_default();
        let mut cut = MAX_NAME_BYTES - ext.len();
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name = format!("{}{ext}", &name[..cut]);
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_back_as_written() {
        let m = FileMsg::Accept { id: 3, offset: 1 << 40 };
        assert_eq!(decode(&control(&m)), Ok(Frame::Control(m)));
        let c = chunk(7, 65_536, b"hello");
        assert_eq!(decode(&c), Ok(Frame::Chunk { id: 7, offset: 65_536, data: b"hello" }));
        assert_eq!(decode(&chunk(1, 0, &[])), Ok(Frame::Chunk { id: 1, offset: 0, data: &[] }));
    }

    #[test]
    fn damaged_messages_are_errors() {
        assert_eq!(decode(&[]), Err(WireError::Empty));
        assert_eq!(decode(&[KIND_CHUNK, 0, 0, 0, 1, 0]), Err(WireError::ShortChunk(6)));
        assert!(matches!(decode(&[KIND_CONTROL, b'{']), Err(WireError::BadControl(_))));
        assert_eq!(decode(&[9, 1, 2]), Err(WireError::UnknownKind { kind: 9, len: 3 }));
        for n in 0..CHUNK_HEADER {
            let _ = decode(&chunk(1, 2, b"x")[..n]);
        }
    }

    #[test]
    fn hostile_names_are_made_safe() {
        assert_eq!(sanitize_name("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_name("..\\..\\Windows\\system.ini"), "system.ini");
        assert_eq!(sanitize_name("CON"), "_CON");
        assert_eq!(sanitize_name("com1.txt"), "_com1.txt");
        assert_eq!(sanitize_name("a\u{7}b\nc.txt"), "a_b_c.txt");
        assert_eq!(sanitize_name("..."), "file");
        assert_eq!(sanitize_name(".bashrc"), "bashrc");
        assert_eq!(sanitize_name("what?<>.txt"), "what___.txt");
        let long = format!("{}.pdf", "ä".repeat(300));
        let s = sanitize_name(&long);
        assert!(s.len() <= MAX_NAME_BYTES && s.ends_with(".pdf"), "{s}");
    }
}
