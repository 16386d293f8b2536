//! Cameras through `nokhwa` (V4L2 on Linux, AVFoundation on macOS, Media Foundation on
//! Windows): list them, open one at a size and frame rate, read pictures as I420.

use super::pattern::I420;
pub use super::source::{CameraError, NO_CAMERA};
use super::source::{Size, Source};
use nokhwa::pixel_format::RgbFormat;
use nokhwa::utils::{
    ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType, Resolution,
};
use serde::Serialize;

/// A camera the system offers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CameraInfo {
    pub index: u32,
    pub name: String,
    pub description: String,
}

/// The cameras present now; an empty list when there are none (or none we may open).
pub fn list() -> Result<Vec<CameraInfo>, CameraError> {
    let found = nokhwa::query(ApiBackend::Auto).map_err(|e| CameraError::List(e.to_string()))?;
    Ok(found
        .into_iter()
        .enumerate()
        .map(|(i, c)| CameraInfo {
            index: match c.index() {
                CameraIndex::Index(n) => *n,
                CameraIndex::String(_) => i as u32,
            },
            name: c.human_name(),
            description: c.description().to_owned(),
        })
        .collect())
}

/// An open camera delivering pictures.
pub struct Camera {
    cam: nokhwa::Camera,
    name: String,
    rgb: Vec<u8>,
}

impl Camera {
    /// Opens camera `index` (the first when `None`) as close as it can to `size` at `fps`.
    pub fn open(index: Option<u32>, size: Size, fps: u32) -> Result<Camera, CameraError> {
        let index = match index {
            Some(i) => i,
            None => list()?.first().map(|c| c.index).ok_or(CameraError::NoCamera)?,
        };
        let wanted = CameraFormat::new(Resolution::new(size.width, size.height), FrameFormat::MJPEG, fps);
        let format = RequestedFormat::new::<RgbFormat>(RequestedFormatType::Closest(wanted));
        let mut cam = nokhwa::Camera::new(CameraIndex::Index(index), format)
            .map_err(|e| CameraError::Open { index, reason: e.to_string() })?;
        cam.open_stream().map_err(|e| CameraError::Start { index, reason: e.to_string() })?;
        let name = cam.info().human_name();
        Ok(Camera { cam, name, rgb: Vec::new() })
    }

    /// "Integrated Camera 1280x720 at 30 fps".
    pub fn describe(&self) -> String {
        let f = self.cam.camera_format();
        format!(
            "{} {}x{} at {} fps",
            self.name,
            f.resolution().width(),
            f.resolution().height(),
            f.frame_rate()
        )
    }

    /// The next picture; blocks until the camera delivers. An error means the camera is gone
    /// (unplugged) or broken.
    pub fn frame(&mut self) -> Result<I420, CameraError> {
        let buf = self.cam.frame().map_err(|e| CameraError::Stopped(e.to_string()))?;
        let res = buf.resolution();
        let (w, h) = (res.width() as usize, res.height() as usize);
        self.rgb.resize(w * h * 3, 0);
        buf.decode_image_to_buffer::<RgbFormat>(&mut self.rgb)
            .map_err(|e| CameraError::BadPicture(e.to_string()))?;
        rgb_to_i420(&self.rgb, w, h).map_err(CameraError::BadPicture)
    }
}

impl Source for Camera {
    fn next(&mut self) -> Result<I420, CameraError> {
        self.frame()
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        if let Err(e) = self.cam.stop_stream() {
            tracing::debug!("stopping the camera: {e}");
        }
    }
}

/// Converts packed RGB to I420 (even sizes; an odd last row or column is cut).
pub fn rgb_to_i420(rgb: &[u8], width: usize, height: usize) -> Result<I420, String> {
    let (w, h) = (width & !1, height & !1);
    if w == 0 || h == 0 || rgb.len() < width * height * 3 {
        return Err(format!("a {width}x{height} picture with {} bytes cannot be read", rgb.len()));
    }
    let mut out = I420::new(w, h);
    let cw = (w / 2) as u32;
    let mut img = yuvutils_rs::YuvPlanarImageMut {
        y_plane: yuvutils_rs::BufferStoreMut::Borrowed(&mut out.y),
        y_stride: w as u32,
        u_plane: yuvutils_rs::BufferStoreMut::Borrowed(&mut out.u),
        u_stride: cw,
        v_plane: yuvutils_rs::BufferStoreMut::Borrowed(&mut out.v),
        v_stride: cw,
        width: w as u32,
        height: h as u32,
    };
    yuvutils_rs::rgb_to_yuv420(
        &mut img,
        rgb,
        width as u32 * 3,
        yuvutils_rs::YuvRange::Limited,
        yuvutils_rs::YuvStandardMatrix::Bt601,
        yuvutils_rs::YuvConversionMode::Balanced,
    )
    .map_err(|e| format!("colour conversion: {e}"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rgb_converts_to_i420_and_back() {
        // Left half red, right half white.
        let (w, h) = (64, 32);
        let mut rgb = vec![0u8; w * h * 3];
        for y in 0..h {
            for x in 0..w {
                let px = if x < w / 2 { [220, 20, 20] } else { [255, 255, 255] };
                rgb[(y * w + x) * 3..][..3].copy_from_slice(&px);
            }
        }
        let pic = rgb_to_i420(&rgb, w, h).expect("converts");
        assert!(pic.y[w - 1] > 220, "white is bright: {}", pic.y[w - 1]);
        assert!(pic.v[0] > 180, "red has a high V: {}", pic.v[0]);
        let back = super::super::video::i420_to_rgba(&pic, Vec::new());
        let px = &back.rgba[..4];
        assert!(px[0] > 180 && px[1] < 70 && px[2] < 70 && px[3] == 255, "red again: {px:?}");
        assert!(rgb_to_i420(&rgb[..10], w, h).is_err(), "short input is an error, not a panic");
    }
}
