//! Media: the ring sound, the test picture, cameras, H.264, and the video pipelines.

pub mod camera;
pub mod codec;
pub mod pattern;
pub mod ring;
pub mod source;
pub mod video;
