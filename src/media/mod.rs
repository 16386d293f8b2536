//! Media: the ring sound, the test picture, H.264 (camera capture follows).

pub mod codec;
pub mod pattern;
pub mod ring;
