//! Asterisk Manager Interface framing, shared by the desktop's call watcher and the server's
//! PBX connector: after a one-line banner (`Asterisk Call Manager/…`), messages are
//! `Key: Value` lines ending with an empty line, CRLF-terminated (Asterisk's manager
//! documentation, "AMI v2 specification"; `manager.c`).

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

/// Longest line read; longer ones are cut (and the rest of the line dropped).
pub const MAX_LINE: usize = 4096;
/// Most lines kept of one message.
pub const MAX_LINES: usize = 256;

/// One AMI message, keys compared without case.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message(pub Vec<(String, String)>);

impl Message {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str())
    }
}

/// Parses the lines of one message; lines without `: ` are ignored.
pub fn parse_message(lines: &[String]) -> Message {
    Message(
        lines
            .iter()
            .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
            .filter(|(k, _)| !k.is_empty())
            .collect(),
    )
}

/// An action to send: `Action: NAME`, then the fields, each value stripped of line breaks
/// (so no value can smuggle in a field of its own), then the empty line.
pub fn action(name: &str, fields: &[(&str, &str)]) -> String {
    let clean = |s: &str| s.replace(['\r', '\n'], "");
    let mut out = format!("Action: {}\r\n", clean(name));
    for (k, v) in fields {
        out.push_str(&format!("{}: {}\r\n", clean(k), clean(v)));
    }
    out.push_str("\r\n");
    out
}

/// Reads one line (without its line break), at most [`MAX_LINE`] bytes kept. `None`: the
/// connection closed.
pub async fn read_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<String>> {
    buf.clear();
    let mut limited = (&mut *r).take(MAX_LINE as u64);
    let n = limited.read_until(b'\n', buf).await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') && n == MAX_LINE {
        // Too long: drop the rest of it.
        let mut rest = Vec::new();
        loop {
            rest.clear();
            let mut limited = (&mut *r).take(MAX_LINE as u64);
            let m = limited.read_until(b'\n', &mut rest).await?;
            if m == 0 || rest.last() == Some(&b'\n') {
                break;
            }
        }
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    Ok(Some(String::from_utf8_lossy(buf).into_owned()))
}

/// Reads one message (up to the empty line). `None`: the connection closed.
pub async fn read_message<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<Vec<String>>> {
    let mut lines = Vec::new();
    loop {
        match read_line(r, buf).await? {
            Some(l) if l.is_empty() => {
                if !lines.is_empty() {
                    return Ok(Some(lines));
                }
            }
            Some(l) => {
                if lines.len() < MAX_LINES {
                    lines.push(l);
                }
            }
            None => return Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_lines_and_limits() {
        let long = "x".repeat(MAX_LINE * 2);
        let text = format!("Response: Success\r\nMessage: {long}\r\n\r\n\r\nEvent: Hangup\r\n\r\n");
        let mut r = tokio::io::BufReader::new(text.as_bytes());
        let mut buf = Vec::new();
        let first = parse_message(&read_message(&mut r, &mut buf).await.expect("read").expect("message"));
        assert_eq!(first.get("response"), Some("Success"));
        assert!(first.get("Message").expect("message").len() < MAX_LINE);
        let second = parse_message(&read_message(&mut r, &mut buf).await.expect("read").expect("message"));
        assert_eq!(second.get("Event"), Some("Hangup"));
        assert!(read_message(&mut r, &mut buf).await.expect("read").is_none());
    }

    #[test]
    fn actions_cannot_smuggle_fields() {
        let a = action("Originate", &[("Exten", "123\r\nAction: Logoff")]);
        assert_eq!(a, "Action: Originate\r\nExten: 123Action: Logoff\r\n\r\n");
    }
}
