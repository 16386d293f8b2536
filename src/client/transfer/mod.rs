//! Files over the session's data channel: offer, accept or reject, chunks with back-pressure,
//! resume from an offset, SHA-256 verification, cancel by either side, both directions at once.
//! The wire format is in PROTOCOL.md ("File transfer") and [`wire`]; this is the engine.

pub mod wire;

pub use wire::{CHUNK_BYTES, FileMsg, sanitize_name};
use wire::{Frame, control};

use crate::rtc::{Channel, ChannelTx};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::mpsc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Way {
    Sending,
    Receiving,
}

/// What the transfer engine reports.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TransferEvent {
    /// A file is being hashed before it is offered.
    Preparing {
        name: String,
        size: u64,
    },
    Offered {
        id: u32,
        name: String,
        size: u64,
    },
    /// The peer offers a file; answer with accept/reject unless received automatically.
    Incoming {
        id: u32,
        name: String,
        size: u64,
        mime: String,
    },
    Started {
        id: u32,
        way: Way,
        name: String,
        size: u64,
        offset: u64,
    },
    Progress {
        id: u32,
        way: Way,
        bytes: u64,
        size: u64,
    },
    Completed {
        id: u32,
        way: Way,
        name: String,
        path: Option<PathBuf>,
        size: u64,
    },
    Failed {
        id: u32,
        way: Way,
        name: String,
        reason: String,
    },
    Rejected {
        id: u32,
        way: Way,
        name: String,
        reason: String,
    },
    Cancelled {
        id: u32,
        way: Way,
        name: String,
        reason: String,
    },
    /// The channel closed; transfers in flight stopped (partial files are kept for resume).
    ChannelClosed,
}

/// What the owner asks of the engine.
#[derive(Debug)]
pub enum TransferCmd {
    Send(Vec<PathBuf>),
    Accept(u32),
    Reject(u32),
    Cancel { id: u32, way: Way },
}

/// Where and how received files are kept.
#[derive(Clone, Debug, PartialEq)]
pub struct ReceiveConfig {
    pub dir: PathBuf,
    /// Accept offered files without asking.
    pub auto_accept: bool,
}

/// Default folder for received files: `~/Downloads/Sidecall`.
pub fn default_save_dir() -> PathBuf {
    directories::UserDirs::new()
        .and_then(|u| u.download_dir().map(|d| d.join("Sidecall")))
        .or_else(|| directories::BaseDirs::new().map(|b| b.home_dir().join("Downloads").join("Sidecall")))
        .unwrap_or_else(|| PathBuf::from("Sidecall"))
}

/// `name`, or `name (1).ext`, `name (2).ext` … whichever does not exist in `dir`.
fn unique_path(dir: &Path, name: &str) -> PathBuf {
    let first = dir.join(name);
    if !first.exists() {
        return first;
    }
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    (1..).map(|n| dir.join(format!("{stem} ({n}){ext}"))).find(|p| !p.exists()).unwrap_or(first)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hashes a file (off the async threads); returns size and SHA-256.
async fn hash_file(path: PathBuf) -> std::io::Result<(u64, String)> {
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut f = std::fs::File::open(&path)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut n_total = 0u64;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            n_total += n as u64;
        }
        Ok((n_total, hex(&h.finalize())))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Explains an I/O error to both sides in plain words.
fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::StorageFull => "the receiver's disk is full".into(),
        ErrorKind::FileTooLarge => "the file is larger than the receiver may write (file size limit)".into(),
        ErrorKind::PermissionDenied => {
            "the receiver may not write to its save folder (permission denied)".into()
        }
        _ => format!("cannot write the file: {e}"),
    }
}

struct OutFile {
    path: PathBuf,
    name: String,
    size: u64,
    cancel: Arc<AtomicBool>,
}

struct InFile {
    name: String,
    size: u64,
    sha256: String,
    part: PathBuf,
    file: Option<tokio::io::BufWriter<tokio::fs::File>>,
    hasher: Sha256,
    received: u64,
    last_report: Instant,
}

/// Runs the file transfers of one session until the channel closes.
pub async fn run(
    mut channel: Channel,
    cfg: ReceiveConfig,
    mut cmds: mpsc::UnboundedReceiver<TransferCmd>,
    events: mpsc::UnboundedSender<TransferEvent>,
) {
    let tx = channel.sender();
    let mut next_id: u32 = 1;
    let mut outgoing: HashMap<u32, OutFile> = HashMap::new();
    let mut offered_in: HashMap<u32, (String, u64, String)> = HashMap::new();
    let mut incoming: HashMap<u32, InFile> = HashMap::new();
    // One sender task streams accepted files in turn.
    let (jobs_tx, jobs_rx) = mpsc::unbounded_channel::<(u32, PathBuf, u64, u64, Arc<AtomicBool>)>();
    tokio::spawn(stream_files(tx.clone(), jobs_rx, events.clone()));
    let emit = |e: TransferEvent| {
        let _ = events.send(e);
    };
    loop {
        tokio::select! {
            cmd = cmds.recv() => {
                let Some(cmd) = cmd else { break };
                match cmd {
                    TransferCmd::Send(paths) => {
                        for path in paths {
                            let name = sanitize_name(&path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
                            let meta_size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                            emit(TransferEvent::Preparing { name: name.clone(), size: meta_size });
                            let (size, sha256) = match hash_file(path.clone()).await {
                                Ok(h) => h,
                                Err(e) => {
                                    emit(TransferEvent::Failed { id: 0, way: Way::Sending, name, reason: format!("cannot read {}: {e}", path.display()) });
                                    continue;
                                }
                            };
                            let id = next_id;
                            next_id += 1;
                            let mime = mime_guess::from_path(&path).first_or_octet_stream().to_string();
                            if tx.send(control(&FileMsg::Offer { id, name: name.clone(), size, sha256, mime })).await.is_err() {
                                break;
                            }
                            outgoing.insert(id, OutFile { path, name: name.clone(), size, cancel: Arc::new(AtomicBool::new(false)) });
                            emit(TransferEvent::Offered { id, name, size });
                        }
                    }
                    TransferCmd::Accept(id) => {
                        if let Some((name, size, sha256)) = offered_in.remove(&id) {
                            accept(&tx, &cfg, &mut incoming, id, name, size, sha256, &events).await;
                        }
                    }
                    TransferCmd::Reject(id) => {
                        if let Some((name, _, _)) = offered_in.remove(&id) {
                            let _ = tx.send(control(&FileMsg::Reject { id, reason: "declined by the receiver".into() })).await;
                            emit(TransferEvent::Rejected { id, way: Way::Receiving, name, reason: "you declined it".into() });
                        }
                    }
                    TransferCmd::Cancel { id, way: Way::Sending } => {
                        if let Some(f) = outgoing.remove(&id) {
                            f.cancel.store(true, Ordering::Relaxed);
                            let _ = tx.send(control(&FileMsg::Cancel { id, reason: "the sender cancelled".into() })).await;
                            emit(TransferEvent::Cancelled { id, way: Way::Sending, name: f.name, reason: "you cancelled".into() });
                        }
                    }
                    TransferCmd::Cancel { id, way: Way::Receiving } => {
                        if let Some(f) = incoming.remove(&id) {
                            drop(f.file);
                            let _ = tokio::fs::remove_file(&f.part).await;
                            let _ = tx.send(control(&FileMsg::Cancel { id, reason: "the receiver cancelled".into() })).await;
                            emit(TransferEvent::Cancelled { id, way: Way::Receiving, name: f.name, reason: "you cancelled".into() });
                        }
                    }
                }
            }
            msg = channel.recv() => {
                let Some(msg) = msg else { break };
                match wire::decode(&msg) {
                    Ok(Frame::Chunk { id, offset, data }) => {
                        let Some(f) = incoming.get_mut(&id) else { continue };
                        if offset != f.received || f.received + data.len() as u64 > f.size {
                            let reason = format!("out-of-order data at {offset} (expected {})", f.received);
                            fail_incoming(&tx, &mut incoming, id, reason, &events).await;
                            continue;
                        }
                        let written = match f.file.as_mut() {
                            Some(w) => w.write_all(data).await,
                            None => Ok(()),
                        };
                        if let Err(e) = written {
                            fail_incoming(&tx, &mut incoming, id, io_reason(&e), &events).await;
                            continue;
                        }
                        f.hasher.update(data);
                        f.received += data.len() as u64;
                        if f.last_report.elapsed() >= Duration::from_millis(100) {
                            f.last_report = Instant::now();
                            emit(TransferEvent::Progress { id, way: Way::Receiving, bytes: f.received, size: f.size });
                        }
                    }
                    Ok(Frame::Control(m)) => handle_control(m, &tx, &cfg, &mut outgoing, &mut offered_in, &mut incoming, &jobs_tx, &events).await,
                    Err(e) => tracing::warn!("file-transfer message ignored: {e}"),
                }
            }
        }
    }
    // Partial files stay as `.part` for a later resume.
    for (_, mut f) in incoming.drain() {
        if let Some(mut w) = f.file.take() {
            let _ = w.flush().await;
        }
    }
    for (_, f) in outgoing.drain() {
        f.cancel.store(true, Ordering::Relaxed);
    }
    emit(TransferEvent::ChannelClosed);
}

#[allow(clippy::too_many_arguments)]
async fn handle_control(
    msg: FileMsg,
    tx: &ChannelTx,
    cfg: &ReceiveConfig,
    outgoing: &mut HashMap<u32, OutFile>,
    offered_in: &mut HashMap<u32, (String, u64, String)>,
    incoming: &mut HashMap<u32, InFile>,
    jobs: &mpsc::UnboundedSender<(u32, PathBuf, u64, u64, Arc<AtomicBool>)>,
    events: &mpsc::UnboundedSender<TransferEvent>,
) {
    let emit = |e: TransferEvent| {
        let _ = events.send(e);
    };
    match msg {
        FileMsg::Offer { id, name, size, sha256, mime } => {
            let name = sanitize_name(&name);
            let valid_hash = sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit());
            if !valid_hash {
                let _ = tx
                    .send(control(&FileMsg::Reject { id, reason: "the offer has no valid SHA-256".into() }))
                    .await;
                return;
            }
            emit(TransferEvent::Incoming { id, name: name.clone(), size, mime });
            if cfg.auto_accept {
                accept(tx, cfg, incoming, id, name, size, sha256.to_ascii_lowercase(), events).await;
            } else {
                offered_in.insert(id, (name, size, sha256.to_ascii_lowercase()));
            }
        }
        FileMsg::Accept { id, offset } => {
            if let Some(f) = outgoing.get(&id) {
                let offset = offset.min(f.size);
                emit(TransferEvent::Started {
                    id,
                    way: Way::Sending,
                    name: f.name.clone(),
                    size: f.size,
                    offset,
                });
                let _ = jobs.send((id, f.path.clone(), f.size, offset, f.cancel.clone()));
            }
        }
        FileMsg::Reject { id, reason } => {
            if let Some(f) = outgoing.remove(&id) {
                emit(TransferEvent::Rejected { id, way: Way::Sending, name: f.name, reason });
            }
        }
        FileMsg::Cancel { id, reason } => {
            if let Some(f) = outgoing.remove(&id) {
                f.cancel.store(true, Ordering::Relaxed);
                emit(TransferEvent::Cancelled { id, way: Way::Sending, name: f.name, reason });
            } else if let Some(f) = incoming.remove(&id) {
                drop(f.file);
                let _ = tokio::fs::remove_file(&f.part).await;
                emit(TransferEvent::Cancelled { id, way: Way::Receiving, name: f.name, reason });
            } else if let Some((name, _, _)) = offered_in.remove(&id) {
                emit(TransferEvent::Cancelled { id, way: Way::Receiving, name, reason });
            }
        }
        FileMsg::Done { id } => finish_incoming(tx, cfg, incoming, id, events).await,
        FileMsg::Verified { id } => {
            if let Some(f) = outgoing.remove(&id) {
                emit(TransferEvent::Completed {
                    id,
                    way: Way::Sending,
                    name: f.name,
                    path: Some(f.path),
                    size: f.size,
                });
            }
        }
        FileMsg::Failed { id, reason } => {
            if let Some(f) = outgoing.remove(&id) {
                f.cancel.store(true, Ordering::Relaxed);
                emit(TransferEvent::Failed { id, way: Way::Sending, name: f.name, reason });
            }
        }
    }
}

/// Accepts an offered file: resumes a matching partial file or starts a new one.
#[allow(clippy::too_many_arguments)]
async fn accept(
    tx: &ChannelTx,
    cfg: &ReceiveConfig,
    incoming: &mut HashMap<u32, InFile>,
    id: u32,
    name: String,
    size: u64,
    sha256: String,
    events: &mpsc::UnboundedSender<TransferEvent>,
) {
    let refuse_name = name.clone();
    let refuse = |reason: String| async move {
        let _ = tx.send(control(&FileMsg::Failed { id, reason: reason.clone() })).await;
        let _ = events.send(TransferEvent::Failed { id, way: Way::Receiving, name: refuse_name, reason });
    };
    if let Err(e) = tokio::fs::create_dir_all(&cfg.dir).await {
        return refuse(format!("cannot create the save folder {}: {e}", cfg.dir.display())).await;
    }
    // A partial file from an interrupted try of the same content is resumed.
    let part = cfg.dir.join(format!(".{}.sidecall.part", &sha256[..32]));
    let (offset, hasher) = match resume_state(part.clone(), size).await {
        Ok(s) => s,
        Err(e) => return refuse(io_reason(&e)).await,
    };
    let file = tokio::fs::OpenOptions::new().create(true).append(true).open(&part).await;
    let file = match file {
        Ok(f) => f,
        Err(e) => return refuse(io_reason(&e)).await,
    };
    let _ = events.send(TransferEvent::Started { id, way: Way::Receiving, name: name.clone(), size, offset });
    incoming.insert(
        id,
        InFile {
            name,
            size,
            sha256,
            part,
            file: Some(tokio::io::BufWriter::with_capacity(1 << 20, file)),
            hasher,
            received: offset,
            last_report: Instant::now(),
        },
    );
    let _ = tx.send(control(&FileMsg::Accept { id, offset })).await;
}

/// The length of an existing partial file (capped at `size`) and the hash of its content.
async fn resume_state(part: PathBuf, size: u64) -> std::io::Result<(u64, Sha256)> {
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut hasher = Sha256::new();
        let mut f = match std::fs::OpenOptions::new().read(true).write(true).open(&part) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, hasher)),
            Err(e) => return Err(e),
        };
        let len = f.metadata()?.len();
        if len > size {
            f.set_len(0)?;
            return Ok((0, hasher));
        }
        let mut buf = vec![0u8; 1 << 20];
        let mut done = 0u64;
        while done < len {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            done += n as u64;
        }
        Ok((done, hasher))
    })
    .await
    .map_err(std::io::Error::other)?
}

async fn fail_incoming(
    tx: &ChannelTx,
    incoming: &mut HashMap<u32, InFile>,
    id: u32,
    reason: String,
    events: &mpsc::UnboundedSender<TransferEvent>,
) {
    if let Some(f) = incoming.remove(&id) {
        drop(f.file);
        let _ = tokio::fs::remove_file(&f.part).await;
        let _ = tx.send(control(&FileMsg::Failed { id, reason: reason.clone() })).await;
        let _ = events.send(TransferEvent::Failed { id, way: Way::Receiving, name: f.name, reason });
    }
}

async fn finish_incoming(
    tx: &ChannelTx,
    cfg: &ReceiveConfig,
    incoming: &mut HashMap<u32, InFile>,
    id: u32,
    events: &mpsc::UnboundedSender<TransferEvent>,
) {
    let Some(mut f) = incoming.remove(&id) else { return };
    let mut synced = Ok(());
    if let Some(mut w) = f.file.take() {
        synced = w.flush().await;
        if synced.is_ok() {
            synced = w.get_ref().sync_all().await;
        }
    }
    if let Err(e) = synced {
        let reason = io_reason(&e);
        let _ = tokio::fs::remove_file(&f.part).await;
        let _ = tx.send(control(&FileMsg::Failed { id, reason: reason.clone() })).await;
        let _ = events.send(TransferEvent::Failed { id, way: Way::Receiving, name: f.name, reason });
        return;
    }
    let digest = hex(&std::mem::take(&mut f.hasher).finalize());
    if f.received != f.size || digest != f.sha256 {
        let reason = format!(
            "verification failed: got {} of {} bytes, SHA-256 {}",
            f.received,
            f.size,
            if digest == f.sha256 { "matches" } else { "differs" }
        );
        let _ = tokio::fs::remove_file(&f.part).await;
        let _ = tx.send(control(&FileMsg::Failed { id, reason: reason.clone() })).await;
        let _ = events.send(TransferEvent::Failed { id, way: Way::Receiving, name: f.name, reason });
        return;
    }
    let target = unique_path(&cfg.dir, &f.name);
    match tokio::fs::rename(&f.part, &target).await {
        Ok(()) => {
            let _ = tx.send(control(&FileMsg::Verified { id })).await;
            let _ = events.send(TransferEvent::Completed {
                id,
                way: Way::Receiving,
                name: f.name,
                path: Some(target),
                size: f.size,
            });
        }
        Err(e) => {
            let reason = io_reason(&e);
            let _ = tx.send(control(&FileMsg::Failed { id, reason: reason.clone() })).await;
            let _ = events.send(TransferEvent::Failed { id, way: Way::Receiving, name: f.name, reason });
        }
    }
}

/// Streams accepted files one after the other.
async fn stream_files(
    tx: ChannelTx,
    mut jobs: mpsc::UnboundedReceiver<(u32, PathBuf, u64, u64, Arc<AtomicBool>)>,
    events: mpsc::UnboundedSender<TransferEvent>,
) {
    while let Some((id, path, size, offset, cancel)) = jobs.recv().await {
        if let Err(e) = stream_one(&tx, id, &path, size, offset, &cancel, &events).await {
            if !cancel.load(Ordering::Relaxed) {
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let _ = tx
                    .send(control(&FileMsg::Cancel { id, reason: format!("the sender failed: {e}") }))
                    .await;
                let _ = events.send(TransferEvent::Failed { id, way: Way::Sending, name, reason: e });
            }
        }
    }
}

async fn stream_one(
    tx: &ChannelTx,
    id: u32,
    path: &Path,
    size: u64,
    offset: u64,
    cancel: &AtomicBool,
    events: &mpsc::UnboundedSender<TransferEvent>,
) -> Result<(), String> {
    let mut file =
        tokio::fs::File::open(path).await.map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    file.seek(std::io::SeekFrom::Start(offset)).await.map_err(|e| e.to_string())?;
    // Read the disk in 1 MiB steps (each tokio file read is a trip to the blocking pool).
    let mut file = tokio::io::BufReader::with_capacity(1 << 20, file);
    let mut pos = offset;
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut last_report = Instant::now();
    while pos < size {
        if cancel.load(Ordering::Relaxed) {
            return Ok(());
        }
        let want = ((size - pos) as usize).min(CHUNK_BYTES);
        file.read_exact(&mut buf[..want])
            .await
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        tx.send(wire::chunk(id, pos, &buf[..want]))
            .await
            .map_err(|e| format!("the connection broke: {e}"))?;
        pos += want as u64;
        if last_report.elapsed() >= Duration::from_millis(100) {
            last_report = Instant::now();
            let _ = events.send(TransferEvent::Progress { id, way: Way::Sending, bytes: pos, size });
        }
    }
    if !cancel.load(Ordering::Relaxed) {
        let _ = events.send(TransferEvent::Progress { id, way: Way::Sending, bytes: size, size });
        tx.send(control(&FileMsg::Done { id })).await.map_err(|e| format!("the connection broke: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_never_overwrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(unique_path(dir.path(), "a.txt"), dir.path().join("a.txt"));
        std::fs::write(dir.path().join("a.txt"), b"x").expect("write");
        assert_eq!(unique_path(dir.path(), "a.txt"), dir.path().join("a (1).txt"));
        std::fs::write(dir.path().join("a (1).txt"), b"x").expect("write");
        assert_eq!(unique_path(dir.path(), "a.txt"), dir.path().join("a (2).txt"));
        std::fs::write(dir.path().join("noext"), b"x").expect("write");
        assert_eq!(unique_path(dir.path(), "noext"), dir.path().join("noext (1)"));
    }
}
