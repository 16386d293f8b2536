//! H.264 with OpenH264: the encoder for what we send, the decoder for what we receive.
//! Output is Annex-B (start codes), as RTP packetisers expect.

use super::pattern::I420;
use openh264::OpenH264API;
use openh264::decoder::Decoder;
pub use openh264::encoder::Complexity;
use openh264::encoder::{BitRate, Encoder, EncoderConfig, FrameRate, UsageType};
use openh264::formats::{YUVSlices, YUVSource};

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("H.264: {0}")]
    OpenH264(#[from] openh264::Error),
}

/// The encoder's speed/quality trade-off. Low: measured on 720p30 camera-like video at
/// 1.94 Mbit/s (`cargo bench --bench video`, one run), encoding took 14 % of a core instead
/// of Medium's 26 %, for 37.64 instead of 37.69 dB PSNR (same bitrate).
pub const COMPLEXITY: Complexity = Complexity::Low;

pub struct H264Encoder {
    enc: Encoder,
    keyframe: bool,
    bitrate: u32,
    fps: f32,
    complexity: Complexity,
    /// A picture went through (OpenH264 is set up on the first one).
    started: bool,
}

impl H264Encoder {
    /// A real-time camera encoder at `bitrate` bits per second.
    pub fn new(bitrate: u32, fps: f32) -> Result<Self, CodecError> {
        Self::with_complexity(bitrate, fps, COMPLEXITY)
    }

    /// [`Self::new`] with another speed/quality trade-off (the benchmark compares them).
    pub fn with_complexity(bitrate: u32, fps: f32, complexity: Complexity) -> Result<Self, CodecError> {
        let cfg = EncoderConfig::new()
            .bitrate(BitRate::from_bps(bitrate))
            .max_frame_rate(FrameRate::from_hz(fps))
            .usage_type(UsageType::CameraVideoRealTime)
            .complexity(complexity);
        Ok(H264Encoder {
            enc: Encoder::with_api_config(OpenH264API::from_source(), cfg)?,
            keyframe: false,
            bitrate,
            fps,
            complexity,
            started: false,
        })
    }

    /// The bitrate asked of the encoder now.
    pub fn bitrate(&self) -> u32 {
        self.bitrate
    }

    /// A new target bitrate from the next picture on, in place: no new encoder, no keyframe.
    pub fn set_bitrate(&mut self, bps: u32) -> Result<(), CodecError> {
        if !self.started {
            // OpenH264 is set up with the configured bitrate on the first picture.
            *self = H264Encoder {
                keyframe: self.keyframe,
                ..H264Encoder::with_complexity(bps, self.fps, self.complexity)?
            };
            return Ok(());
        }
        use openh264_sys2::{
            ENCODER_OPTION, ENCODER_OPTION_BITRATE, ENCODER_OPTION_MAX_BITRATE, LAYER_NUM, SBitrateInfo,
            SPATIAL_LAYER_0, SPATIAL_LAYER_ALL,
        };
        let set = |enc: &mut Encoder, option: ENCODER_OPTION, layer: LAYER_NUM| -> Result<(), CodecError> {
            let mut info = SBitrateInfo { iLayer: layer, iBitrate: bps.min(i32::MAX as u32) as i32 };
            // SAFETY: the encoder is initialised (a picture went through it) and `info` is the
            // struct these two options take; OpenH264 copies it before returning.
            let rc = unsafe { enc.raw_api().set_option(option, (&raw mut info).cast()) };
            if rc == 0 {
                Ok(())
            } else {
                Err(CodecError::OpenH264(openh264::Error::msg("the encoder refused the new bitrate")))
            }
        };
        // The layer's bitrate may not exceed its maximum: raise the maximum first, lower it
        // last. The maximum of "all layers" is the total's alone; the layer's own is separate.
        let max = |enc: &mut Encoder| {
            set(enc, ENCODER_OPTION_MAX_BITRATE, SPATIAL_LAYER_0)?;
            set(enc, ENCODER_OPTION_MAX_BITRATE, SPATIAL_LAYER_ALL)
        };
        if bps > self.bitrate {
            max(&mut self.enc)?;
            set(&mut self.enc, ENCODER_OPTION_BITRATE, SPATIAL_LAYER_ALL)?;
        } else {
            set(&mut self.enc, ENCODER_OPTION_BITRATE, SPATIAL_LAYER_ALL)?;
            max(&mut self.enc)?;
        }
        self.bitrate = bps;
        Ok(())
    }

    /// The next frame is a keyframe (after a PLI/FIR from the receiver).
    pub fn request_keyframe(&mut self) {
        self.keyframe = true;
    }

    /// Encodes one picture; empty when the rate control skipped it.
    pub fn encode(&mut self, f: &I420) -> Result<Vec<u8>, CodecError> {
        if std::mem::take(&mut self.keyframe) {
            self.enc.force_intra_frame();
        }
        let cw = f.width.div_ceil(2);
        let src = YUVSlices::new((&f.y, &f.u, &f.v), (f.width, f.height), (f.width, cw, cw));
        self.started = true;
        Ok(self.enc.encode(&src)?.to_vec())
    }
}

pub struct H264Decoder {
    dec: Decoder,
}

impl H264Decoder {
    pub fn new() -> Result<Self, CodecError> {
        Ok(H264Decoder { dec: Decoder::new()? })
    }

    /// Decodes Annex-B data into the decoder's own buffers (no copy); `None` until a whole
    /// picture is there.
    pub fn decode_in_place(
        &mut self,
        annexb: &[u8],
    ) -> Result<Option<openh264::decoder::DecodedYUV<'_>>, CodecError> {
        Ok(self.dec.decode(annexb)?)
    }

    /// Decodes Annex-B data into a picture of its own; `None` until a whole picture is there.
    pub fn decode(&mut self, annexb: &[u8]) -> Result<Option<I420>, CodecError> {
        let Some(yuv) = self.decode_in_place(annexb)? else { return Ok(None) };
        let (w, h) = yuv.dimensions();
        let (sy, su, sv) = yuv.strides();
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let mut out = I420::new(w, h);
        for row in 0..h {
            out.y[row * w..(row + 1) * w].copy_from_slice(&yuv.y()[row * sy..row * sy + w]);
        }
        for row in 0..ch {
            out.u[row * cw..(row + 1) * cw].copy_from_slice(&yuv.u()[row * su..row * su + cw]);
            out.v[row * cw..(row + 1) * cw].copy_from_slice(&yuv.v()[row * sv..row * sv + cw]);
        }
        Ok(Some(out))
    }
}

/// Whether Annex-B data holds an IDR picture (NAL type 5).
pub fn has_keyframe(annexb: &[u8]) -> bool {
    annexb.windows(4).any(|w| w[..3] == [0, 0, 1] && w[3] & 0x1f == 5)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::pattern::{TestPattern, read_marks};

    #[test]
    fn pattern_survives_h264_and_keyframes_come_on_request() {
        let p = TestPattern::new(640, 480);
        let mut enc = H264Encoder::new(1_500_000, 30.0).expect("encoder");
        let mut dec = H264Decoder::new().expect("decoder");
        let mut seen = Vec::new();
        for n in 0..20u64 {
            if n == 12 {
                enc.request_keyframe();
            }
            let data = enc.encode(&p.frame(n, 1000 + n * 33)).expect("encode");
            if n == 0 || n == 12 {
                assert!(has_keyframe(&data), "frame {n} is a keyframe");
            }
            if let Some(pic) = dec.decode(&data).expect("decode") {
                assert_eq!((pic.width, pic.height), (640, 480));
                seen.push(read_marks(&pic.y, pic.width, pic.width, pic.height).expect("marks readable").0);
            }
        }
        assert!(seen.len() >= 15, "most frames decoded: {seen:?}");
        assert!(seen.windows(2).all(|w| w[1] > w[0]), "the counter increases: {seen:?}");
    }
}
