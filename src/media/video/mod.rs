//! Video pipelines, both off the UI thread and off the async runtime's workers:
//!
//! - sending: a capture thread takes pictures from the camera or the test pattern, encodes
//!   them to H.264 and hands the encoded frames to the connection; keyframe requests and
//!   bitrate changes reach it through [`SendControl`], and it follows the link's estimate
//!   (bitrate, picture size: [`Adapter`]);
//! - receiving: RTP packets are put back together into whole frames ([`Assembler`]), a
//!   decoder thread decodes them and publishes only the latest picture ([`FrameSlot`]); a
//!   lost packet makes the receiver drop frames up to the next keyframe and ask for one.
//!
//! Both sides keep figures ([`SendStats`], [`RecvStats`]) for the app, the CLI and the
//! benchmark.

mod adapt;
mod params;
mod receive;
mod send;
mod slot;
mod stats;

pub use crate::media::source::wall_ms;
pub use adapt::*;
pub use params::*;
pub use receive::*;
pub use send::*;
pub use slot::*;
pub use stats::*;

#[cfg(test)]
mod tests;
