//! Where pictures come from: the trait a capture thread reads from, the built-in test
//! pattern as such a source, picture sizes, and why a source fails. Cameras (`camera`)
//! implement the trait too.

use super::pattern::{I420, TestPattern};
use serde::Serialize;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What to tell a user who has no camera.
pub const NO_CAMERA: &str = "no camera found: connect one (and check you may use it, e.g. the `video` group on Linux), or send the test pattern";

/// Why a camera gives no pictures. The video stops with it; files go on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CameraError {
    #[error("cannot list cameras: {0}")]
    List(String),
    #[error("{NO_CAMERA}")]
    NoCamera,
    #[error("cannot open camera {index}: {reason}")]
    Open { index: u32, reason: String },
    #[error("camera {index} does not start: {reason}")]
    Start { index: u32, reason: String },
    /// Unplugged or broken while running.
    #[error("the camera stopped delivering pictures: {0}")]
    Stopped(String),
    #[error("cannot read the camera's picture: {0}")]
    BadPicture(String),
}

/// A picture size such as `1280x720`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Size {
    pub width: u32,
    pub height: u32,
}

impl FromStr for Size {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("bad picture size {s:?}: write it as WIDTHxHEIGHT, e.g. 1280x720");
        let (w, h) = s.trim().split_once(['x', 'X']).ok_or_else(bad)?;
        let (width, height) = (w.parse::<u32>().map_err(|_| bad())?, h.parse::<u32>().map_err(|_| bad())?);
        if !(160..=3840).contains(&width) || !(120..=2160).contains(&height) {
            return Err(format!("picture size {s} is out of range (160x120 to 3840x2160)"));
        }
        Ok(Size { width, height })
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

/// A picture source the capture thread reads from.
pub trait Source: Send {
    /// The next picture; blocks until it is due.
    fn next(&mut self) -> Result<I420, CameraError>;
}

pub struct PatternSource {
    pub pattern: TestPattern,
    pub n: u64,
    pub start: Instant,
    pub interval: Duration,
}

impl Source for PatternSource {
    fn next(&mut self) -> Result<I420, CameraError> {
        let due = self.start + self.interval * self.n as u32;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else if now - due > self.interval * 5 {
            // Fell far behind (machine busy): skip ahead instead of bursting.
            self.n = ((now - self.start).as_nanos() / self.interval.as_nanos().max(1)) as u64;
        }
        let f = self.pattern.frame(self.n, wall_ms());
        self.n += 1;
        Ok(f)
    }
}

/// Milliseconds since the Unix epoch: the clock the test pattern stamps on each frame.
pub fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
