//! The built-in test picture: moving colour bars and a sliding square, with the frame number
//! and the capture time drawn as digits for people and encoded as black/white blocks for
//! machines (they survive H.264, so the receiving side can check that frames advance and
//! measure latency). Used when there is no camera, and in tests and benchmarks.

/// A picture in I420 (Y plane, then quarter-size U and V), tightly packed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct I420 {
    pub width: usize,
    pub height: usize,
    pub y: Vec<u8>,
    pub u: Vec<u8>,
    pub v: Vec<u8>,
}

impl I420 {
    pub fn new(width: usize, height: usize) -> Self {
        let (cw, ch) = (width.div_ceil(2), height.div_ceil(2));
        I420 { width, height, y: vec![16; width * height], u: vec![128; cw * ch], v: vec![128; cw * ch] }
    }
}

/// Bits in each mark band: 32 of frame counter, 32 of capture time (ms, low bits).
const MARK_BITS: usize = 64;

/// Rows of one mark band: in proportion to the width (as wide as two cells), so that the
/// marks of a picture the sender shrank for a slow link are read the same way.
fn band(width: usize) -> usize {
    2 * (width / MARK_BITS)
}

#[derive(Clone, Debug)]
pub struct TestPattern {
    pub width: usize,
    pub height: usize,
    /// Sensor-like noise (± this many levels of Y, new every frame) below the marks, so the
    /// encoder works as hard as with a real camera; 0 for a clean picture.
    pub noise: u8,
}

/// (Y, U, V) of the classic bars: white, yellow, cyan, green, magenta, red, blue.
const BARS: [(u8, u8, u8); 7] = [
    (235, 128, 128),
    (210, 16, 146),
    (170, 166, 16),
    (145, 54, 34),
    (106, 202, 222),
    (81, 90, 240),
    (41, 240, 110),
];

/// 3×5 digits, then ':' and '.', one row per nibble (bit 2 = left).
const FONT: [[u8; 5]; 12] = [
    [7, 5, 5, 5, 7],
    [2, 6, 2, 2, 7],
    [7, 1, 7, 4, 7],
    [7, 1, 7, 1, 7],
    [5, 5, 7, 1, 1],
    [7, 4, 7, 1, 7],
    [7, 4, 7, 5, 7],
    [7, 1, 1, 1, 1],
    [7, 5, 7, 5, 7],
    [7, 5, 7, 1, 7],
    [0, 2, 0, 2, 0],
    [0, 0, 0, 0, 2],
];

impl TestPattern {
    /// A pattern of at least 320×240 (the marks need the width).
    pub fn new(width: usize, height: usize) -> Self {
        TestPattern { width: width.max(320) & !1, height: height.max(240) & !1, noise: 0 }
    }

    /// The same picture with camera-like noise of ± `levels`.
    pub fn noisy(mut self, levels: u8) -> Self {
        self.noise = levels.min(32);
        self
    }

    /// Frame `n`, captured at `capture_ms` (milliseconds, any epoch).
    pub fn frame(&self, n: u64, capture_ms: u64) -> I420 {
        let (w, h) = (self.width, self.height);
        let mut f = I420::new(w, h);
        let shift = (n as usize * 4) % w;
        let cw = w / 2;
        // Every row of the bars is the same: build one, then copy it.
        let bar = |x: usize| BARS[((x + shift) * BARS.len() / w) % BARS.len()];
        let band = band(w);
        let y_row: Vec<u8> = (0..w).map(|x| bar(x).0).collect();
        let u_row: Vec<u8> = (0..cw).map(|x| bar(x * 2).1).collect();
        let v_row: Vec<u8> = (0..cw).map(|x| bar(x * 2).2).collect();
        for row in (band * 2)..h {
            f.y[row * w..(row + 1) * w].copy_from_slice(&y_row);
        }
        for row in band..h / 2 {
            f.u[row * cw..(row + 1) * cw].copy_from_slice(&u_row);
            f.v[row * cw..(row + 1) * cw].copy_from_slice(&v_row);
        }
        // A square that slides diagonally: motion the encoder must follow.
        let side = h / 6;
        let (sx, sy) = ((n as usize * 7) % (w - side), band * 2 + (n as usize * 3) % (h - side - band * 2));
        for row in sy..sy + side {
            for x in sx..sx + side {
                f.y[row * w + x] = 16;
            }
        }
        if self.noise > 0 {
            add_noise(&mut f.y[band * 2 * w..], n, self.noise);
        }
        self.marks(&mut f, n as u32, capture_ms as u32);
        let clock = format!(
            "{n:06} {:02}:{:02}.{:03}",
            capture_ms / 60_000 % 60,
            capture_ms / 1000 % 60,
            capture_ms % 1000
        );
        // White digits on a black, colourless box, legible over any bar.
        let (x0, y0, scale) = (8, h - 5 * 4 - 8, 4);
        let (bw, bh) = ((clock.chars().count() * 4 * scale + 8).min(w - x0 + 4), 5 * scale + 8);
        let (bx, by) = ((x0 - 4) & !1, (y0 - 4) & !1);
        for row in by..(by + bh).min(h) {
            f.y[row * w + bx..row * w + (bx + bw).min(w)].fill(16);
        }
        for row in by / 2..((by + bh) / 2).min(h / 2) {
            f.u[row * cw + bx / 2..row * cw + ((bx + bw) / 2).min(cw)].fill(128);
            f.v[row * cw + bx / 2..row * cw + ((bx + bw) / 2).min(cw)].fill(128);
        }
        self.text(&mut f, &clock, x0, y0, scale);
        f
    }

    fn marks(&self, f: &mut I420, counter: u32, ms: u32) {
        let bits = (u64::from(counter) << 32) | u64::from(ms);
        let (cell, band) = (f.width / MARK_BITS, band(f.width));
        for i in 0..MARK_BITS {
            let on = bits >> (63 - i) & 1 == 1;
            for row in 0..band * 2 {
                // Second band: the complement, so a misread cell is detected.
                let lit = if row < band { on } else { !on };
                for x in i * cell..(i + 1) * cell {
                    f.y[row * f.width + x] = if lit { 235 } else { 16 };
                }
            }
        }
    }

    fn text(&self, f: &mut I420, s: &str, x0: usize, y0: usize, scale: usize) {
        let mut x = x0;
        for c in s.chars() {
            let glyph = match c {
                '0'..='9' => Some(FONT[c as usize - '0' as usize]),
                ':' => Some(FONT[10]),
                '.' => Some(FONT[11]),
                _ => None,
            };
            if let Some(g) = glyph {
                for (gy, row) in g.iter().enumerate() {
                    for gx in 0..3 {
                        if row >> (2 - gx) & 1 == 1 {
                            for dy in 0..scale {
                                for dx in 0..scale {
                                    let (px, py) = (x + gx * scale + dx, y0 + gy * scale + dy);
                                    if px < f.width && py < f.height {
                                        f.y[py * f.width + px] = 235;
                                    }
                                }
                            }
                        }
                    }
                }
            }
            x += 4 * scale;
        }
    }
}

/// Adds fresh sensor-like noise of ± `levels` to `plane` (clamped to video range). Sixteen
/// independent xorshift generators side by side, so the compiler makes vector code of it:
/// one generator for the whole plane (a serial chain through every pixel) cost more than
/// the rest of the picture.
fn add_noise(plane: &mut [u8], n: u64, levels: u8) {
    const LANES: usize = 16;
    let span = u32::from(levels) * 2 + 1;
    let mut x = [0u32; LANES];
    for (i, s) in x.iter_mut().enumerate() {
        *s = ((n as u32) ^ (i as u32).wrapping_mul(0x85EB_CA6B)).wrapping_mul(0x9E37_79B9) | 1;
    }
    let noise = i16::from(levels);
    let mut chunks = plane.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (px, s) in chunk.iter_mut().zip(x.iter_mut()) {
            *s ^= *s << 13;
            *s ^= *s >> 17;
            *s ^= *s << 5;
            // The top 16 bits scaled into 0..span (a multiply, not a division per pixel).
            let d = (((*s >> 16) * span) >> 16) as i16 - noise;
            *px = (i16::from(*px) + d).clamp(16, 235) as u8;
        }
    }
    for (px, s) in chunks.into_remainder().iter_mut().zip(x.iter()) {
        let d = (((*s >> 16) * span) >> 16) as i16 - noise;
        *px = (i16::from(*px) + d).clamp(16, 235) as u8;
    }
}

/// Reads the frame counter and capture time (ms, low 32 bits) back from a picture's Y plane.
/// `None` if the marks are not there or not readable.
pub fn read_marks(y: &[u8], stride: usize, width: usize, height: usize) -> Option<(u32, u32)> {
    let (cell, band) = (width / MARK_BITS, band(width));
    if width < 320 || height < band * 2 || y.len() < stride * band * 2 {
        return None;
    }
    let mean = |row0: usize, i: usize| {
        let (x0, x1) = (i * cell + cell / 4, (i + 1) * cell - cell / 4);
        let mut sum = 0u32;
        let mut n = 0u32;
        for row in row0 + band / 4..row0 + band - band / 4 {
            for x in x0..x1.max(x0 + 1) {
                sum += u32::from(*y.get(row * stride + x)?);
                n += 1;
            }
        }
        Some(sum / n.max(1))
    };
    let mut bits = 0u64;
    for i in 0..MARK_BITS {
        let (a, b) = (mean(0, i)? > 128, mean(band, i)? > 128);
        if a == b {
            return None;
        }
        bits = bits << 1 | u64::from(a);
    }
    Some(((bits >> 32) as u32, bits as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_round_trip_and_frames_differ() {
        let p = TestPattern::new(640, 480);
        let a = p.frame(41, 123_456_789);
        let b = p.frame(42, 123_456_822);
        assert_eq!(read_marks(&a.y, a.width, a.width, a.height), Some((41, 123_456_789)));
        assert_eq!(read_marks(&b.y, b.width, b.width, b.height), Some((42, 123_456_822)));
        assert_ne!(a.y, b.y, "the picture moves");
        let blank = I420::new(640, 480);
        assert_eq!(read_marks(&blank.y, 640, 640, 480), None);
    }

    #[test]
    fn noise_stays_within_its_levels_and_changes_every_frame() {
        let clean = TestPattern::new(640, 480);
        let noisy = TestPattern::new(640, 480).noisy(6);
        let (c, a, b) = (clean.frame(3, 99), noisy.frame(3, 99), noisy.frame(4, 99));
        assert_eq!(read_marks(&a.y, 640, 640, 480), Some((3, 99)), "the marks carry no noise");
        let start = 2 * band(640) * 640;
        let mut seen = [0u32; 13];
        let mut sum = 0i64;
        for (p, q) in c.y[start..].iter().zip(&a.y[start..]) {
            let d = i16::from(*q) - i16::from(*p);
            if (32..=220).contains(p) {
                assert!((-6..=6).contains(&d), "noise {d} beyond ±6");
                seen[(d + 6) as usize] += 1;
                sum += i64::from(d);
            }
        }
        assert!(seen.iter().all(|&n| n > 1000), "every level occurs: {seen:?}");
        let total: u32 = seen.iter().sum();
        assert!((sum as f64 / f64::from(total)).abs() < 0.1, "centred on zero");
        let (fa, fb) = (&a.y[start..], &b.y[start..]);
        let same = fa.iter().zip(fb).filter(|(x, y)| x == y).count();
        assert!(same < fa.len() / 4, "fresh noise each frame ({same} of {} equal)", fa.len());
    }
}
