//! `tel:` links. Sidecall registers as the handler (`packaging/linux/sidecall.desktop`); a
//! second launch with `tel:+49…` hands the number to the running instance over a local socket
//! instead of opening another window.

use super::{CallEvent, Emitter, WatcherStatus};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TelError {
    #[error("not a tel: link: {0:?}")]
    NotTel(String),
    #[error("the tel: link has no number")]
    Empty,
}

/// The number in a `tel:` (or `callto:`) link, parameters and visual separators kept for the
/// number parser, percent-escapes decoded.
pub fn parse_tel(uri: &str) -> Result<String, TelError> {
    let uri = uri.trim();
    let lower = uri.to_ascii_lowercase();
    let rest = ["tel:", "callto:", "tel://", "callto://"]
        .iter()
        .rev()
        .find_map(|p| lower.starts_with(p).then(|| &uri[p.len()..]))
        .ok_or_else(|| TelError::NotTel(uri.chars().take(40).collect()))?;
    let number = rest.split([';', '?']).next().unwrap_or("");
    let mut out = String::new();
    let bytes = number.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(v) =
                std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v as char);
            i += 3;
            continue;
        }
        out.push(bytes[i] as char);
        i += 1;
    }
    let out: String = out.chars().filter(|c| !c.is_control()).take(64).collect();
    if out.trim().is_empty() {
        return Err(TelError::Empty);
    }
    Ok(out.trim().to_string())
}

/// Where the running instance of `profile` listens.
pub fn socket_path(profile: &str) -> PathBuf {
    let dir = directories::ProjectDirs::from("org", "Sidecall", "sidecall")
        .and_then(|d| d.runtime_dir().map(Path::to_path_buf))
        .unwrap_or_else(std::env::temp_dir);
    dir.join(format!("sidecall-{profile}.sock"))
}

/// The local channel between launches: a Unix socket where there are Unix sockets;
/// elsewhere (Windows) a loopback TCP port, written into the file at `path`.
mod local {
    use std::path::Path;

    #[cfg(unix)]
    pub type Stream = tokio::net::UnixStream;
    #[cfg(unix)]
    pub type Listener = tokio::net::UnixListener;
    #[cfg(not(unix))]
    pub type Stream = tokio::net::TcpStream;
    #[cfg(not(unix))]
    pub type Listener = tokio::net::TcpListener;

    #[cfg(unix)]
    pub async fn connect(path: &Path) -> std::io::Result<Stream> {
        Stream::connect(path).await
    }

    #[cfg(not(unix))]
    pub async fn connect(path: &Path) -> std::io::Result<Stream> {
        let port: u16 = std::fs::read_to_string(path)?
            .trim()
            .parse()
            .map_err(|_| std::io::Error::other("no port in the instance file"))?;
        Stream::connect(("127.0.0.1", port)).await
    }

    #[cfg(unix)]
    pub async fn bind(path: &Path) -> std::io::Result<Listener> {
        Listener::bind(path)
    }

    #[cfg(not(unix))]
    pub async fn bind(path: &Path) -> std::io::Result<Listener> {
        let l = Listener::bind("127.0.0.1:0").await?;
        std::fs::write(path, l.local_addr()?.port().to_string())?;
        Ok(l)
    }

    pub async fn accept(l: &Listener) -> std::io::Result<Stream> {
        l.accept().await.map(|(s, _)| s)
    }
}

/// Hands `number` to the running instance. `Err`: none is running.
pub async fn forward(path: &Path, number: &str) -> std::io::Result<()> {
    let mut s = local::connect(path).await?;
    let line = format!("DIAL {}\n", number.replace(['\r', '\n'], ""));
    s.write_all(line.as_bytes()).await?;
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply).await?;
    if reply.trim() == "OK" {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("the running instance said {reply:?}")))
    }
}

/// Accepts numbers from later launches until the receiver goes away.
pub async fn serve(path: PathBuf, out: Emitter) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    // A socket file left by a crashed instance: nobody answers on it, so it can go.
    if path.exists() && local::connect(&path).await.is_err() {
        let _ = std::fs::remove_file(&path);
    }
    let listener = match local::bind(&path).await {
        Ok(l) => l,
        Err(e) => {
            out.status(WatcherStatus::Failed {
                reason: format!(
                    "cannot listen on {}: {e} (another Sidecall of this profile runs?)",
                    path.display()
                ),
            });
            return;
        }
    };
    out.status(WatcherStatus::Listening { at: path.display().to_string() });
    let counter = AtomicU64::new(0);
    while let Ok(stream) = local::accept(&listener).await {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        let read = tokio::time::timeout(std::time::Duration::from_secs(2), reader.read_line(&mut line)).await;
        let reply = match (read, line.trim().strip_prefix("DIAL ")) {
            (Ok(Ok(n)), Some(number)) if n <= 200 && !number.trim().is_empty() => {
                let call_ref = format!("tel:{}", counter.fetch_add(1, Ordering::Relaxed) + 1);
                if !out.call(CallEvent::Outgoing { call_ref, number: number.trim().to_string() }) {
                    break;
                }
                "OK\n"
            }
            _ => "ERR send DIAL <number>\n",
        };
        let _ = reader.get_mut().write_all(reply.as_bytes()).await;
    }
    let _ = std::fs::remove_file(&path);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tel_links() {
        assert_eq!(parse_tel("tel:+49-30-123456"), Ok("+49-30-123456".into()));
        assert_eq!(parse_tel("TEL:030%20123456;phone-context=+49"), Ok("030 123456".into()));
        assert_eq!(parse_tel("callto://+4930123456"), Ok("+4930123456".into()));
        assert_eq!(parse_tel("tel:"), Err(TelError::Empty));
        assert!(matches!(parse_tel("https://example.org"), Err(TelError::NotTel(_))));
        assert_eq!(parse_tel("tel:%zz1"), Ok("%zz1".into()));
        assert_eq!(parse_tel("tel:12%"), Ok("12%".into()));
    }
}
