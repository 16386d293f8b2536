//! File transfers between two peers over a real WebRTC data channel on loopback.

use crate::rtc::connected_pair;
use sidecall::client::transfer::{self, ReceiveConfig, TransferCmd, TransferEvent, Way};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

struct Side {
    cmds: mpsc::UnboundedSender<TransferCmd>,
    events: mpsc::UnboundedReceiver<TransferEvent>,
    dir: PathBuf,
}

impl Side {
    async fn until<T>(&mut self, what: &str, mut pick: impl FnMut(&TransferEvent) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(e)) => {
                    if let Some(v) = pick(&e) {
                        return v;
                    }
                    if !matches!(e, TransferEvent::Progress { .. }) {
                        seen.push(e);
                    }
                }
                _ => panic!("no {what}; saw {seen:#?}"),
            }
        }
    }

    /// The id of the next file the peer offers.
    async fn offered(&mut self) -> u32 {
        self.until("offer", |e| match e {
            TransferEvent::Incoming { id, .. } => Some(*id),
            _ => None,
        })
        .await
    }

    async fn completed(&mut self, way: Way) -> (String, Option<PathBuf>) {
        self.until("completed", |e| match e {
            TransferEvent::Completed { way: w, name, path, .. } if *w == way => {
                Some((name.clone(), path.clone()))
            }
            TransferEvent::Failed { way: w, reason, .. } if *w == way => panic!("failed: {reason}"),
            _ => None,
        })
        .await
    }
}

async fn pair(auto_accept: bool) -> (Side, Side, tempfile::TempDir) {
    let root = tempfile::tempdir().expect("tempdir");
    let ((pa, ca), (pb, cb), _) = connected_pair().await;
    let mut sides = Vec::new();
    for (name, ch, peer) in [("a", ca, pa), ("b", cb, pb)] {
        let dir = root.path().join(name);
        let (cmds, cmd_rx) = mpsc::unbounded_channel();
        let (ev_tx, events) = mpsc::unbounded_channel();
        let cfg = ReceiveConfig { dir: dir.clone(), auto_accept };
        tokio::spawn(async move {
            let _peer = peer; // keep the connection for the engine's lifetime
            transfer::run(ch, cfg, cmd_rx, ev_tx).await;
        });
        sides.push(Side { cmds, events, dir });
    }
    let b = sides.pop().expect("b");
    let a = sides.pop().expect("a");
    (a, b, root)
}

fn make_file(dir: &Path, name: &str, len: usize, seed: u8) -> PathBuf {
    std::fs::create_dir_all(dir).expect("dir");
    let p = dir.join(name);
    let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
    std::fs::write(&p, data).expect("write");
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_both_ways_arrive_byte_identical() {
    let (mut a, mut b, root) = pair(true).await;
    let src = root.path().join("src");
    let big = make_file(&src, "big.bin", 3 * 1024 * 1024 + 17, 1);
    let empty = make_file(&src, "empty.txt", 0, 0);
    let small = make_file(&src, "report.pdf", 1000, 9);
    let back = make_file(&src, "photo.jpg", 700_000, 5);
    a.cmds.send(TransferCmd::Send(vec![big.clone(), empty.clone(), small.clone()])).expect("send");
    b.cmds.send(TransferCmd::Send(vec![back.clone()])).expect("send");
    let mut got_b = Vec::new();
    for _ in 0..3 {
        got_b.push(b.completed(Way::Receiving).await);
    }
    let got_a = a.completed(Way::Receiving).await;
    for (name, path) in got_b.iter().chain(std::iter::once(&got_a)) {
        let path = path.clone().expect("path");
        let original = std::fs::read(src.join(name)).expect("original");
        assert_eq!(std::fs::read(&path).expect("received"), original, "{name} byte-identical");
    }
    assert!(got_b.iter().any(|(n, _)| n == "empty.txt"));
    // No partial files are left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&b.dir)
        .expect("dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Sending the same file again never overwrites: it gets a new name.
    a.cmds.send(TransferCmd::Send(vec![small.clone()])).expect("send");
    let (_, path) = b.completed(Way::Receiving).await;
    assert_eq!(path.expect("path").file_name().and_then(|n| n.to_str()), Some("report (1).pdf"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_rejects_and_either_side_cancels() {
    let (mut a, mut b, root) = pair(false).await;
    let src = root.path().join("src");
    let f = make_file(&src, "unwanted.bin", 10_000, 3);
    a.cmds.send(TransferCmd::Send(vec![f.clone()])).expect("send");
    let id = b.offered().await;
    b.cmds.send(TransferCmd::Reject(id)).expect("reject");
    a.until("rejected", |e| matches!(e, TransferEvent::Rejected { way: Way::Sending, .. }).then_some(()))
        .await;
    assert!(!b.dir.join("unwanted.bin").exists());

    // Receiver cancels mid-transfer: a large file, cancelled once bytes flow.
    let big = make_file(&src, "large.bin", 40 * 1024 * 1024, 4);
    a.cmds.send(TransferCmd::Send(vec![big.clone()])).expect("send");
    let id = b.offered().await;
    b.cmds.send(TransferCmd::Accept(id)).expect("accept");
    b.until("progress", |e| matches!(e, TransferEvent::Progress { way: Way::Receiving, .. }).then_some(()))
        .await;
    b.cmds.send(TransferCmd::Cancel { id, way: Way::Receiving }).expect("cancel");
    let reason = a
        .until("cancelled", |e| match e {
            TransferEvent::Cancelled { way: Way::Sending, reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .await;
    assert!(reason.contains("receiver"), "{reason}");

    // Sender cancels mid-transfer.
    a.cmds.send(TransferCmd::Send(vec![big.clone()])).expect("send");
    let id = b.offered().await;
    b.cmds.send(TransferCmd::Accept(id)).expect("accept");
    let aid = a
        .until("started", |e| match e {
            TransferEvent::Started { id, way: Way::Sending, .. } => Some(*id),
            _ => None,
        })
        .await;
    a.until("progress", |e| matches!(e, TransferEvent::Progress { way: Way::Sending, .. }).then_some(()))
        .await;
    a.cmds.send(TransferCmd::Cancel { id: aid, way: Way::Sending }).expect("cancel");
    let reason = b
        .until("cancelled", |e| match e {
            TransferEvent::Cancelled { way: Way::Receiving, reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .await;
    assert!(reason.contains("sender"), "{reason}");
    assert!(!b.dir.join("large.bin").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_stay_inside_the_save_folder() {
    let (a, mut b, root) = pair(true).await;
    let src = root.path().join("src");
    // The sender's own name is safe; the offer on the wire is what a hostile peer controls,
    // so the receiver sanitises whatever arrives. Simulate by naming files oddly.
    for name in ["CON", "a\u{1}b.txt", &"x".repeat(250)] {
        let f = make_file(&src, name, 10, 1);
        a.cmds.send(TransferCmd::Send(vec![f])).expect("send");
        let (_, path) = b.completed(Way::Receiving).await;
        let path = path.expect("path");
        assert_eq!(path.parent(), Some(b.dir.as_path()), "{path:?}");
        let file = path.file_name().and_then(|n| n.to_str()).expect("utf-8 name");
        assert!(!file.chars().any(char::is_control) && file.len() <= 200 && file != "CON", "{file:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_save_folder_fails_cleanly_on_both_sides() {
    let (mut a, mut b, root) = pair(true).await;
    // A file where the save folder should be: nothing can be created there.
    std::fs::write(&b.dir, b"not a folder").expect("block the folder");
    let f = make_file(&root.path().join("src"), "doc.txt", 5000, 2);
    a.cmds.send(TransferCmd::Send(vec![f])).expect("send");
    let reason = a
        .until("failed", |e| match e {
            TransferEvent::Failed { way: Way::Sending, reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .await;
    assert!(reason.contains("save folder"), "{reason}");
    b.until("failed here too", |e| {
        matches!(e, TransferEvent::Failed { way: Way::Receiving, .. }).then_some(())
    })
    .await;
}

fn wire_control(msg: &transfer::FileMsg) -> bytes::BytesMut {
    let mut b = bytes::BytesMut::from(&[1u8][..]);
    b.extend_from_slice(&serde_json::to_vec(msg).expect("json"));
    b
}

fn wire_chunk(id: u32, offset: u64, data: &[u8]) -> bytes::BytesMut {
    let mut b = bytes::BytesMut::from(&[2u8][..]);
    b.extend_from_slice(&id.to_be_bytes());
    b.extend_from_slice(&offset.to_be_bytes());
    b.extend_from_slice(data);
    b
}

/// A hostile peer speaks the wire format by hand: path traversal in the name, and a file
/// whose bytes do not match its hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_peer_cannot_escape_the_folder_or_slip_in_bad_bytes() {
    use sha2::Digest;
    use transfer::FileMsg;
    let root = tempfile::tempdir().expect("tempdir");
    let ((_pa, mut raw), (pb, cb), _) = connected_pair().await;
    let dir = root.path().join("inbox");
    let (_cmds, cmd_rx) = mpsc::unbounded_channel();
    let (ev_tx, events) = mpsc::unbounded_channel();
    let cfg = ReceiveConfig { dir: dir.clone(), auto_accept: true };
    tokio::spawn(async move {
        let _peer = pb;
        transfer::run(cb, cfg, cmd_rx, ev_tx).await;
    });
    let mut b = Side { cmds: _cmds, events, dir: dir.clone() };

    let data = b"root:x:0:0::/root:/bin/sh\n".to_vec();
    let sha = sha2::Sha256::digest(&data).iter().map(|x| format!("{x:02x}")).collect::<String>();
    let offer = FileMsg::Offer {
        id: 7,
        name: "../../etc/passwd".into(),
        size: data.len() as u64,
        sha256: sha.clone(),
        mime: "text/plain".into(),
    };
    raw.send(wire_control(&offer)).await.expect("offer");
    let accept = raw.recv().await.expect("answer");
    let accept: FileMsg = serde_json::from_slice(&accept[1..]).expect("json");
    assert_eq!(accept, FileMsg::Accept { id: 7, offset: 0 });
    raw.send(wire_chunk(7, 0, &data)).await.expect("chunk");
    raw.send(wire_control(&FileMsg::Done { id: 7 })).await.expect("done");
    let (name, path) = b.completed(Way::Receiving).await;
    assert_eq!(name, "passwd");
    assert_eq!(path, Some(dir.join("passwd")));
    let verified: FileMsg = serde_json::from_slice(&raw.recv().await.expect("verdict")[1..]).expect("json");
    assert_eq!(verified, FileMsg::Verified { id: 7 });

    // Same size, other bytes: refused, nothing kept.
    let offer = FileMsg::Offer {
        id: 8,
        name: "invoice.pdf".into(),
        size: data.len() as u64,
        sha256: sha,
        mime: "application/pdf".into(),
    };
    raw.send(wire_control(&offer)).await.expect("offer");
    let _accept = raw.recv().await.expect("accept");
    raw.send(wire_chunk(8, 0, &vec![b'X'; data.len()])).await.expect("chunk");
    raw.send(wire_control(&FileMsg::Done { id: 8 })).await.expect("done");
    let reason = b
        .until("failed", |e| match e {
            TransferEvent::Failed { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .await;
    assert!(reason.contains("verification failed"), "{reason}");
    let verdict: FileMsg = serde_json::from_slice(&raw.recv().await.expect("verdict")[1..]).expect("json");
    assert!(matches!(verdict, FileMsg::Failed { id: 8, .. }), "{verdict:?}");
    assert!(!dir.join("invoice.pdf").exists());
    let names: Vec<String> = std::fs::read_dir(&dir)
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["passwd".to_string()], "no partial files left");
}
