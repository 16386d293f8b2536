//! The ring played while a request waits for an answer, through `cpal`.
//!
//! The audio stream lives on its own thread (a `cpal` stream may not move between threads).
//! Without an audio device the app works on silently and says so once in the log.

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc;

/// The ring: a short chime, looped (16-bit mono WAV).
const RING_WAV: &[u8] = include_bytes!("../../assets/ring.wav");

enum Cmd {
    Start,
    Stop,
}

/// Starts and stops the ring. Cheap to create; the audio thread starts on first use.
pub struct Ringer {
    tx: Option<mpsc::Sender<Cmd>>,
    volume: Arc<AtomicU32>,
    ringing: Arc<AtomicBool>,
}

impl Default for Ringer {
    fn default() -> Self {
        Self::new()
    }
}

impl Ringer {
    pub fn new() -> Self {
        Ringer {
            tx: None,
            volume: Arc::new(AtomicU32::new(0.8f32.to_bits())),
            ringing: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether the ring is meant to be sounding now (true even without an audio device).
    pub fn is_ringing(&self) -> bool {
        self.ringing.load(Ordering::Relaxed)
    }

    pub fn start(&mut self, volume: f32) {
        self.volume.store(volume.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
        self.ringing.store(true, Ordering::Relaxed);
        if self.tx.is_none() {
            let (tx, rx) = mpsc::channel();
            let volume = self.volume.clone();
            let spawned = std::thread::Builder::new()
                .name("sidecall-ring".into())
                .spawn(move || audio_thread(rx, volume));
            if let Err(e) = spawned {
                tracing::warn!("cannot start the ring thread: {e}");
                return;
            }
            self.tx = Some(tx);
        }
        if let Some(tx) = &self.tx {
            let _ = tx.send(Cmd::Start);
        }
    }

    pub fn stop(&mut self) {
        self.ringing.store(false, Ordering::Relaxed);
        if let Some(tx) = &self.tx {
            let _ = tx.send(Cmd::Stop);
        }
    }
}

/// The chime as mono f32 samples and its rate.
fn decode() -> Result<(Vec<f32>, u32), String> {
    let reader = hound::WavReader::new(std::io::Cursor::new(RING_WAV)).map_err(|e| e.to_string())?;
    let spec = reader.spec();
    let samples: Result<Vec<f32>, _> =
        reader.into_samples::<i16>().map(|s| s.map(|v| f32::from(v) / f32::from(i16::MAX))).collect();
    Ok((samples.map_err(|e| e.to_string())?, spec.sample_rate))
}

fn audio_thread(rx: mpsc::Receiver<Cmd>, volume: Arc<AtomicU32>) {
    let (samples, rate) = match decode() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("the ring sound is damaged: {e}");
            return;
        }
    };
    let samples = Arc::new(samples);
    let mut stream: Option<cpal::Stream> = None;
    let mut warned = false;
    while let Ok(cmd) = rx.recv() {
        match cmd {
            Cmd::Start => {
                if stream.is_none() {
                    match open(samples.clone(), rate, volume.clone()) {
                        Ok(s) => stream = Some(s),
                        Err(e) => {
                            if !warned {
                                tracing::warn!(
                                    "no sound for the ring: {e}; requests still show in the window"
                                );
                                warned = true;
                            }
                        }
                    }
                }
                if let Some(s) = &stream
                    && let Err(e) = s.play()
                {
                    tracing::warn!("cannot play the ring: {e}");
                }
            }
            // Dropping the stream releases the device.
            Cmd::Stop => stream = None,
        }
    }
}

/// Plays the ring once on the default output for `duration` and names the device: the
/// "test the ring" of the settings and `sidecall sound-check`.
pub fn sound_check(duration: std::time::Duration, volume: f32) -> Result<String, String> {
    let (samples, rate) = decode()?;
    let volume = Arc::new(AtomicU32::new(volume.clamp(0.0, 1.0).to_bits()));
    let (stream, name) = open_named(Arc::new(samples), rate, volume)?;
    stream.play().map_err(|e| format!("cannot play: {e}"))?;
    std::thread::sleep(duration);
    drop(stream);
    Ok(name)
}

fn open(samples: Arc<Vec<f32>>, rate: u32, volume: Arc<AtomicU32>) -> Result<cpal::Stream, String> {
    open_named(samples, rate, volume).map(|(s, _)| s)
}

fn open_named(
    samples: Arc<Vec<f32>>,
    rate: u32,
    volume: Arc<AtomicU32>,
) -> Result<(cpal::Stream, String), String> {
    let host = cpal::default_host();
    let device = host.default_output_device().ok_or("no audio output device")?;
    let name = device.to_string();
    let supported = device.default_output_config().map_err(|e| e.to_string())?;
    let config = supported.config();
    let channels = usize::from(config.channels.max(1));
    let step = rate as f64 / f64::from(config.sample_rate.max(1));
    let mut pos = 0.0f64;
    let len = samples.len().max(1) as f64;
    let mut next = move || {
        let v = samples.get(pos as usize).copied().unwrap_or(0.0);
        pos = (pos + step) % len;
        v * f32::from_bits(volume.load(Ordering::Relaxed))
    };
    let err = |e| tracing::warn!("ring stream error: {e}");
    let stream = match supported.sample_format() {
        cpal::SampleFormat::F32 => device.build_output_stream(
            config,
            move |out: &mut [f32], _| {
                for frame in out.chunks_mut(channels) {
                    let v = next();
                    frame.fill(v);
                }
            },
            err,
            None,
        ),
        cpal::SampleFormat::I16 => device.build_output_stream(
            config,
            move |out: &mut [i16], _| {
                for frame in out.chunks_mut(channels) {
                    let v = (next() * f32::from(i16::MAX)) as i16;
                    frame.fill(v);
                }
            },
            err,
            None,
        ),
        other => return Err(format!("unsupported sample format {other:?}")),
    };
    match stream {
        Ok(s) => Ok((s, name)),
        Err(e) => Err(format!("{name}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_sound_decodes() {
        let (samples, rate) = decode().expect("valid wav");
        assert_eq!(rate, 16_000);
        assert!(samples.len() > 16_000, "at least a second");
        assert!(samples.iter().any(|s| s.abs() > 0.3), "audible");
    }

    #[test]
    fn ringing_without_a_sound_card_is_fine() {
        let mut r = Ringer::new();
        r.start(0.5);
        assert!(r.is_ringing());
        r.stop();
        assert!(!r.is_ringing());
    }
}
