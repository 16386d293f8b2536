//! What to send: the source, picture size, frame rate and bitrate.

pub use crate::media::source::Size;
use std::fmt;
use std::str::FromStr;

/// Where the pictures we send come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VideoSource {
    /// The built-in moving test picture with frame counter and capture time.
    TestPattern,
    /// The test picture with camera-like sensor noise (the encoder works as with a camera).
    NoisyTestPattern,
    /// A camera by index (`None`: the first one).
    Camera(Option<u32>),
}

impl fmt::Display for VideoSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VideoSource::TestPattern => f.write_str("test-pattern"),
            VideoSource::NoisyTestPattern => f.write_str("test-pattern:noisy"),
            VideoSource::Camera(None) => f.write_str("camera"),
            VideoSource::Camera(Some(i)) => write!(f, "camera:{i}"),
        }
    }
}

impl FromStr for VideoSource {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "test-pattern" | "pattern" | "test" => Ok(VideoSource::TestPattern),
            "test-pattern:noisy" => Ok(VideoSource::NoisyTestPattern),
            "camera" => Ok(VideoSource::Camera(None)),
            other => match other.strip_prefix("camera:").map(str::parse::<u32>) {
                Some(Ok(i)) => Ok(VideoSource::Camera(Some(i))),
                _ => Err(format!(
                    "unknown video source {s:?}: use test-pattern, test-pattern:noisy, camera or camera:N (N from `sidecall cameras`)"
                )),
            },
        }
    }
}

/// What to send: source, size, frame rate, bitrate.
#[derive(Clone, Debug, PartialEq)]
pub struct VideoParams {
    pub source: VideoSource,
    pub size: Size,
    pub fps: u32,
    /// Bits per second; 0 picks one for the size and frame rate.
    pub bitrate: u32,
}

impl Default for VideoParams {
    fn default() -> Self {
        VideoParams {
            source: VideoSource::TestPattern,
            size: Size { width: 1280, height: 720 },
            fps: 30,
            bitrate: 0,
        }
    }
}

impl VideoParams {
    /// The bitrate asked of the encoder: the given one, or ~0.07 bits per pixel per frame
    /// (720p30 ≈ 1.9 Mbit/s, 640×480 at 30 ≈ 0.65 Mbit/s).
    pub fn effective_bitrate(&self) -> u32 {
        if self.bitrate > 0 {
            return self.bitrate.clamp(50_000, 20_000_000);
        }
        let px = u64::from(self.size.width) * u64::from(self.size.height) * u64::from(self.fps.max(1));
        (px * 7 / 100).clamp(150_000, 8_000_000) as u32
    }
}
