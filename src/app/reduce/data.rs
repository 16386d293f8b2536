//! What the session's data side reports: the channel, files moving, video.

use super::*;

pub(super) fn data_event(m: &mut Model, ev: DataEvent, clock: Clock) {
    let v = &mut m.view;
    match ev {
        DataEvent::ChannelOpen { path, .. } => {
            v.channel_open = true;
            v.path = path;
        }
        DataEvent::Failed(why) => {
            if v.active.is_some() {
                v.notice = Some(format!("The peer-to-peer connection failed: {why}"));
            }
        }
        DataEvent::Transfer(t) => transfer_event(&mut v.files, t, v.settings.auto_accept_files, clock.now),
        DataEvent::Video(ev) => match ev {
            VideoEvent::SendingStarted { what } => v.video.sending = VideoSending::On { what },
            VideoEvent::SendingStopped => v.video.sending = VideoSending::Off,
            VideoEvent::SendingFailed { reason, .. } => v.video.sending = VideoSending::Failed(reason),
            VideoEvent::RemoteStarted => v.video.remote_on = true,
            VideoEvent::RemoteStopped => v.video.remote_on = false,
        },
    }
}

pub(super) fn transfer_event(files: &mut Vec<FileRow>, t: TransferEvent, auto_accept: bool, now: Instant) {
    let new_row = |id, way, name: String, size, status| FileRow {
        id,
        way,
        name,
        size,
        bytes: 0,
        speed: 0.0,
        status,
        last: (now, 0),
    };
    let row = |files: &mut Vec<FileRow>, id: u32, way: Way| -> Option<usize> {
        files.iter().rposition(|r| r.id == id && r.way == way)
    };
    match t {
        TransferEvent::Preparing { name, size } => {
            files.push(new_row(0, Way::Sending, name, size, FileStatus::Preparing))
        }
        TransferEvent::Offered { id, name, size } => {
            // The row of the file being prepared gets its id now.
            match files.iter_mut().find(|r| r.id == 0 && r.status == FileStatus::Preparing && r.name == name)
            {
                Some(r) => {
                    r.id = id;
                    r.size = size;
                    r.status = FileStatus::Waiting;
                }
                None => files.push(new_row(id, Way::Sending, name, size, FileStatus::Waiting)),
            }
        }
        TransferEvent::Incoming { id, name, size, .. } => {
            let status = if auto_accept { FileStatus::Active } else { FileStatus::Offered };
            files.push(new_row(id, Way::Receiving, name, size, status));
        }
        TransferEvent::Started { id, way, offset, .. } => {
            if let Some(i) = row(files, id, way) {
                let r = &mut files[i];
                r.status = FileStatus::Active;
                r.bytes = offset;
                r.last = (now, offset);
            }
        }
        TransferEvent::Progress { id, way, bytes, .. } => {
            if let Some(i) = row(files, id, way) {
                let r = &mut files[i];
                let dt = now.saturating_duration_since(r.last.0).as_secs_f64();
                if dt >= 0.5 {
                    r.speed = bytes.saturating_sub(r.last.1) as f64 / dt;
                    r.last = (now, bytes);
                }
                r.bytes = bytes;
            }
        }
        TransferEvent::Completed { id, way, path, size, .. } => {
            if let Some(i) = row(files, id, way) {
                files[i].bytes = size;
                files[i].status = FileStatus::Done { path };
            }
        }
        TransferEvent::Failed { id, way, name, reason } => match row(files, id, way) {
            Some(i) => files[i].status = FileStatus::Failed(reason),
            None => files.push(new_row(id, way, name, 0, FileStatus::Failed(reason))),
        },
        TransferEvent::Rejected { id, way, reason, .. } => {
            if let Some(i) = row(files, id, way) {
                files[i].status = FileStatus::Rejected(reason);
            }
        }
        TransferEvent::Cancelled { id, way, reason, .. } => {
            if let Some(i) = row(files, id, way) {
                files[i].status = FileStatus::Cancelled(reason);
            }
        }
        TransferEvent::ChannelClosed => {
            for r in files.iter_mut().filter(|r| !r.status.is_final()) {
                r.status = FileStatus::Failed("the connection closed (a later try resumes)".into());
            }
        }
    }
}
