//! The contract for every string a client sends that the server stores or forwards: a
//! documented maximum (PROTOCOL.md, "Limits") checked on input, so that whatever one client
//! sends, every message the server makes from it fits what the other clients accept
//! ([`super::MAX_MESSAGE_BYTES`]). `tests::largest_forwarded_messages_fit` derives the largest
//! messages from these limits.

use super::{ClientMsg, SignalData};

/// Dialed number (`access_request.target`), in characters.
pub const TARGET_CHARS: usize = 64;
/// Region (ISO 3166 alpha-2), in characters.
pub const REGION_CHARS: usize = 2;
/// Call reference (`access_request.call_ref`), in bytes of printable text.
pub const CALL_REF_BYTES: usize = 128;
/// One SDP (`signal` offer or answer), in bytes: printable text, tabs and line breaks.
pub const SDP_BYTES: usize = 16 * 1024;
/// One ICE candidate line, in bytes of printable text.
pub const CANDIDATE_BYTES: usize = 1024;
/// A candidate's `sdp_mid`, in bytes of printable text.
pub const SDP_MID_BYTES: usize = 32;
/// Display name, in characters (see [`check_name`] for which characters).
pub const DISPLAY_NAME_CHARS: usize = 64;
/// Device name given at login, in characters (same rules as a display name).
pub const DEVICE_NAME_CHARS: usize = 64;
/// Bearer token in `hello`, in bytes.
pub const TOKEN_BYTES: usize = 128;
/// Session id a client names, in bytes.
pub const SESSION_ID_BYTES: usize = 64;
/// Numbers in one block list.
pub const BLOCKED_NUMBERS: usize = 1000;
/// Server-made error texts are cut to this many bytes (they may quote what a client sent).
pub const ERROR_MESSAGE_BYTES: usize = 512;

/// Which field broke which limit; shown to the client as `invalid_field`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field} {problem}")]
pub struct FieldError {
    pub field: &'static str,
    pub problem: String,
}

fn err(field: &'static str, problem: impl Into<String>) -> FieldError {
    FieldError { field, problem: problem.into() }
}

/// Printable text: no control characters (tabs and line breaks only where `lines`).
fn printable(field: &'static str, s: &str, max_bytes: usize, lines: bool) -> Result<(), FieldError> {
    if s.len() > max_bytes {
        return Err(err(field, format!("is {} bytes long; at most {max_bytes} are allowed", s.len())));
    }
    let allowed = |c: char| !c.is_control() || (lines && matches!(c, '\r' | '\n' | '\t'));
    if let Some(c) = s.chars().find(|c| !allowed(*c)) {
        return Err(err(field, format!("contains the control character U+{:04X}", c as u32)));
    }
    Ok(())
}

fn chars(field: &'static str, s: &str, max: usize) -> Result<(), FieldError> {
    let n = s.chars().count();
    if n > max {
        return Err(err(field, format!("is {n} characters long; at most {max} are allowed")));
    }
    printable(field, s, max * 4, false)
}

/// Characters that display as nothing or reorder the text around them: bidi controls,
/// zero-width characters and the rest of Unicode's default-ignorable code points (15.1),
/// plus line and paragraph separators.
pub fn is_invisible(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x034F | 0x061C | 0x115F..=0x1160 | 0x17B4..=0x17B5 | 0x180B..=0x180F
        | 0x200B..=0x200F | 0x2028..=0x202E | 0x2060..=0x206F | 0x3164 | 0xFE00..=0xFE0F
        | 0xFEFF | 0xFFA0 | 0xFFF0..=0xFFF8 | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A
        | 0xE0000..=0xE0FFF)
}

/// Emoji sequences need a zero-width joiner or a variation selector after a symbol
/// (👨‍👩‍👧, ❤️): those are kept; anywhere else they are refused like other invisible characters.
fn joins_a_symbol(prev: Option<char>, c: char) -> bool {
    matches!(c, '\u{200D}' | '\u{FE0E}' | '\u{FE0F}')
        && prev.is_some_and(|p| (p as u32) >= 0x2000 && !is_invisible(p) && !p.is_alphanumeric())
}

/// A display or device name: 1 to `max` characters after trimming, no control characters,
/// no bidi controls or invisible characters (a name must not be able to display as someone
/// else's). Returns the trimmed name.
pub fn check_name(field: &'static str, name: &str, max: usize) -> Result<String, FieldError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(err(field, "is empty"));
    }
    chars(field, name, max)?;
    let mut prev = None;
    for c in name.chars() {
        if is_invisible(c) && !joins_a_symbol(prev, c) {
            return Err(err(
                field,
                format!("contains the invisible or text-direction character U+{:04X}", c as u32),
            ));
        }
        prev = Some(c);
    }
    Ok(name.to_string())
}

fn session_id(id: &super::SessionId) -> Result<(), FieldError> {
    printable("session_id", &id.0, SESSION_ID_BYTES, false)
}

/// Checks a signaling payload against the limits.
pub fn check_signal(data: &SignalData) -> Result<(), FieldError> {
    match data {
        SignalData::Offer { sdp } | SignalData::Answer { sdp } => printable("sdp", sdp, SDP_BYTES, true),
        SignalData::Candidate { candidate, sdp_mid, .. } => {
            printable("candidate", candidate, CANDIDATE_BYTES, false)?;
            match sdp_mid {
                Some(mid) => printable("sdp_mid", mid, SDP_MID_BYTES, false),
                None => Ok(()),
            }
        }
        SignalData::EndOfCandidates | SignalData::Video { .. } => Ok(()),
    }
}

/// Checks every string of a client message against the limits.
pub fn check(msg: &ClientMsg) -> Result<(), FieldError> {
    match msg {
        ClientMsg::Hello { token, .. } => printable("token", token, TOKEN_BYTES, false),
        ClientMsg::AccessRequest { target, region, call_ref, .. } => {
            chars("target", target, TARGET_CHARS)?;
            if let Some(r) = region {
                chars("region", r, REGION_CHARS)?;
            }
            match call_ref {
                Some(c) => printable("call_ref", c, CALL_REF_BYTES, false),
                None => Ok(()),
            }
        }
        ClientMsg::Answer { session_id: id, .. } | ClientMsg::End { session_id: id } => session_id(id),
        ClientMsg::Resume { session_id: id, peer, .. } => {
            session_id(id)?;
            chars("peer", peer, TARGET_CHARS)
        }
        ClientMsg::Signal { session_id: id, data } => {
            session_id(id)?;
            check_signal(data)
        }
        ClientMsg::SetBlocked { numbers } => {
            if numbers.len() > BLOCKED_NUMBERS {
                return Err(err(
                    "numbers",
                    format!("holds {} numbers; at most {BLOCKED_NUMBERS}", numbers.len()),
                ));
            }
            numbers.iter().try_for_each(|n| chars("numbers", n, TARGET_CHARS))
        }
        ClientMsg::SetExtension { extension } => match extension {
            Some(e) => chars("extension", e, 32),
            None => Ok(()),
        },
        ClientMsg::UpdateSettings { .. } | ClientMsg::Ping { .. } => Ok(()),
    }
}

/// Cuts a server-made text to [`ERROR_MESSAGE_BYTES`] (at a character boundary).
pub fn clip(mut text: String) -> String {
    if text.len() > ERROR_MESSAGE_BYTES {
        let mut end = ERROR_MESSAGE_BYTES - 3;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{
        ErrorCode, MAX_MESSAGE_BYTES, Offer, Outcome, Party, PeerInfo, Role, ServerMsg, SessionId,
    };

    /// The longest value of a field whose JSON encoding is as long as it can be: a character
    /// JSON escapes (`"` → `\"`, a line break → `\n`) or a four-byte one, whichever is longer
    /// per unit of the limit.
    fn worst_bytes(n: usize, lines: bool) -> String {
        if lines { "\n".repeat(n) } else { "\"".repeat(n) }
    }
    fn worst_chars(n: usize) -> String {
        "𝕏".repeat(n) // 4 bytes each; escaping adds nothing for it
    }

    #[test]
    fn largest_forwarded_messages_fit() {
        let id = SessionId("f".repeat(SESSION_ID_BYTES));
        let name = worst_chars(DISPLAY_NAME_CHARS);
        let number = "+".to_string() + &"9".repeat(15);
        let call_ref = worst_bytes(CALL_REF_BYTES, false);
        let sdp = worst_bytes(SDP_BYTES, true);
        let candidate = worst_bytes(CANDIDATE_BYTES, false);
        let mid = worst_bytes(SDP_MID_BYTES, false);
        // What the clients send is within the limits ...
        let sent = [
            ClientMsg::AccessRequest {
                req_id: u64::MAX,
                target: worst_chars(TARGET_CHARS),
                offer: Offer { files: true, video: true },
                region: Some("DE".into()),
                call_ref: Some(call_ref.clone()),
                place_call: true,
            },
            ClientMsg::Signal { session_id: id.clone(), data: SignalData::Offer { sdp: sdp.clone() } },
            ClientMsg::Signal {
                session_id: id.clone(),
                data: SignalData::Candidate {
                    candidate: candidate.clone(),
                    sdp_mid: Some(mid.clone()),
                    sdp_mline_index: Some(u16::MAX),
                },
            },
        ];
        for m in &sent {
            check(m).expect("at the limits is allowed");
            assert!(serde_json::to_string(m).expect("encode").len() <= MAX_MESSAGE_BYTES);
        }
        assert!(check_name("display_name", &name, DISPLAY_NAME_CHARS).is_ok());
        // ... and so is everything the server makes of it.
        let made = [
            ServerMsg::Initiation {
                session_id: id.clone(),
                caller: Party { number: number.clone(), display_name: name.clone(), verified: true },
                offer: Offer { files: true, video: true },
                call_ref: Some(call_ref),
                expires_in_ms: u64::MAX,
            },
            ServerMsg::SessionStarted {
                session_id: id.clone(),
                role: Role::Callee,
                offer: Offer { files: true, video: true },
                peer: PeerInfo {
                    number: number.clone(),
                    display_name: name.clone(),
                    device_ip: Some("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().expect("ip")),
                    observed_ip: Some("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().expect("ip")),
                },
                relayed: true,
            },
            ServerMsg::Signal { session_id: id.clone(), data: SignalData::Answer { sdp } },
            ServerMsg::Signal {
                session_id: id.clone(),
                data: SignalData::Candidate {
                    candidate,
                    sdp_mid: Some(mid),
                    sdp_mline_index: Some(u16::MAX),
                },
            },
            ServerMsg::Blocked { numbers: vec![number.clone(); BLOCKED_NUMBERS] },
            ServerMsg::AccessOutcome {
                req_id: u64::MAX,
                session_id: Some(id.clone()),
                outcome: Outcome::InvalidNumber { reason: clip(worst_bytes(100_000, false)) },
            },
            ServerMsg::Error {
                code: ErrorCode::InvalidField,
                message: clip(worst_bytes(100_000, false)),
                req_id: Some(u64::MAX),
                session_id: Some(id),
            },
        ];
        for m in &made {
            let len = serde_json::to_string(m).expect("encode").len();
            assert!(len <= MAX_MESSAGE_BYTES, "{m:?} encodes to {len} bytes");
        }
    }

    #[test]
    fn over_the_limits_is_refused() {
        let long_ref = ClientMsg::AccessRequest {
            req_id: 1,
            target: "+4930123456".into(),
            offer: Offer::default(),
            region: None,
            call_ref: Some("x".repeat(CALL_REF_BYTES + 1)),
            place_call: false,
        };
        assert_eq!(check(&long_ref).map_err(|e| e.field), Err("call_ref"));
        let sdp = SignalData::Offer { sdp: "v=0\r\n".repeat(SDP_BYTES) };
        assert_eq!(check_signal(&sdp).map_err(|e| e.field), Err("sdp"));
        let nul =
            SignalData::Candidate { candidate: "candidate:1\0".into(), sdp_mid: None, sdp_mline_index: None };
        assert!(check_signal(&nul).is_err());
        assert!(check(&ClientMsg::SetBlocked { numbers: vec!["1".into(); BLOCKED_NUMBERS + 1] }).is_err());
    }

    #[test]
    fn names_cannot_hide_or_reorder_text() {
        for bad in
            ["Bob\u{202E}evilA", "A\u{200B}lice", "\u{2066}x", "Al\u{00AD}ice", "a\u{200D}b", "x\u{2028}y"]
        {
            assert!(check_name("display_name", bad, 64).is_err(), "{bad:?} must be refused");
        }
        for good in ["Alice Müller", "李小龙", "José ❤\u{FE0F}", "👨\u{200D}👩\u{200D}👧 Family", "عمر"]
        {
            assert!(check_name("display_name", good, 64).is_ok(), "{good:?} must be allowed");
        }
        assert_eq!(check_name("display_name", "  Ann  ", 64).as_deref(), Ok("Ann"));
        assert!(check_name("display_name", "   ", 64).is_err());
        assert!(check_name("display_name", &"a".repeat(65), 64).is_err());
    }
}
