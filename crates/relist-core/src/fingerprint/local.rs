//! Local binary features: FAST-9 corners with 256-bit BRIEF descriptors, the way
//! copy-detection systems survive crops. A global hash describes the whole frame, so cutting
//! 3% off one side already moves PDQ past its threshold; a corner's neighbourhood does not
//! change when the frame does.
//!
//! Features are computed on the trimmed picture (see [`super::regions::Layout`]) scaled so its
//! longer side is [`CHECK_SIDE`] pixels; stored photos also get a level at
//! [`STORED_SIDES`]`[1]`, so that a checked crop (whose content looks larger once scaled)
//! meets a stored level of about its scale. Matching (in [`crate::matcher`]) looks each
//! descriptor up in the exact Hamming index and counts, per stored image and level, the
//! matches that agree on one translation: random matches do not agree.
//!
//! Everything here is integer or fixed-seed arithmetic on pixels; the output is stored, so
//! any change of output must bump [`LOCAL_VERSION`].
use std::sync::OnceLock;

use image::imageops;
use image::{GenericImageView, GrayImage, RgbImage};

use super::regions::{Layout, Rect, Side};

/// Version of the feature rules.
///
/// - 2: pictures under [`MIN_SIDE`] get no features (same output for every other picture).
pub const LOCAL_VERSION: u8 = 2;
/// Longer side, in pixels, of the picture a checked photo's features are computed on.
pub const CHECK_SIDE: u32 = 320;
/// Levels of a stored photo: the checked scale, and 1.25x for crops of up to about 20%.
pub const STORED_SIDES: [u32; 2] = [320, 400];
/// Most features kept per level (strongest distinctive corners first).
pub const MAX_FEATURES: usize = 200;
/// FAST intensity threshold.
const FAST_THRESHOLD: i16 = 20;
/// Pictures whose longer side is under this get no features: scaling them up more than 3x
/// to [`CHECK_SIDE`] invents no corners, and what FAST then finds are the enlarged pixel
/// steps of the rendering (a font, an outline), alike on every tiny icon that carries the
/// same stamp. (At 160, real photos of 160-200 px lost their crops: measured.)
pub const MIN_SIDE: u32 = 96;
/// Patch radius of the descriptor; corners closer to the edge are skipped.
const PATCH: i32 = 15;

pub use crate::hashes::Feature;

/// The features of a picture: level 0 only when checked, every stored level when stored.
///
/// A checked picture also gets level 1: the features of its largest segment (the photo in a
/// screenshot, a collage tile) at [`CHECK_SIDE`], where the whole picture shows it too small.
/// Levels of a checked picture and of a stored one are different things: the matcher only
/// compares positions within one (checked level, stored level) pair.
pub fn features(img: &RgbImage, layout: &Layout, side: Side) -> Vec<Feature> {
    let usable = |r: Rect| r.w >= 32 && r.h >= 32;
    if layout.whole.w.max(layout.whole.h) < MIN_SIDE {
        return Vec::new();
    }
    let base = if usable(layout.trimmed) {
        layout.trimmed
    } else {
        layout.whole
    };
    // Grey levels are per pixel: converting the picture once gives every level's cut the
    // same values as converting the cut.
    let gray = grayscale(img);
    match side {
        Side::Stored => levels(&gray, base, &STORED_SIDES, 0, false),
        Side::Checked => {
            let mut out = levels(&gray, base, &[CHECK_SIDE], 0, true);
            if let Some(seg) = layout.segments.first().copied().filter(|r| usable(*r)) {
                out.extend(levels(&gray, seg, &[CHECK_SIDE], 1, true));
            }
            out
        }
    }
}

/// A checked level's mirror image (left-right) is level `level + MIRRORED`: the same corners
/// described as the mirrored picture would describe them, so a mirrored re-upload meets
/// the stored photo's features even when its frame has changed too (a crop, a screenshot)
/// and no whole-picture hash survives.
pub const MIRRORED: u8 = 2;

/// `imageops::grayscale(img)`, value for value (Rec. 709 weights in integers, as `image`
/// does), in one pass over the raw bytes instead of `image`'s per-pixel generic path.
fn grayscale(img: &RgbImage) -> GrayImage {
    let mut luma = vec![0u8; img.as_raw().len() / 3];
    for (o, p) in luma.iter_mut().zip(img.as_raw().chunks_exact(3)) {
        *o = ((2126 * u32::from(p[0]) + 7152 * u32::from(p[1]) + 722 * u32::from(p[2])) / 10_000) as u8;
    }
    GrayImage::from_raw(img.width(), img.height(), luma).unwrap_or_else(|| imageops::grayscale(img))
}

/// Features of `r` scaled to each longer side in `sides`, levels numbered from `first`; with
/// `mirrored`, also those of each level's mirror image (see [`MIRRORED`]).
fn levels(gray: &GrayImage, r: Rect, sides: &[u32], first: u8, mirrored: bool) -> Vec<Feature> {
    let mut out = Vec::new();
    for (level, &long) in (first..).zip(sides) {
        let (w, h) = (r.w, r.h);
        let f = long as f32 / w.max(h) as f32;
        let (lw, lh) = (
            ((w as f32 * f).round() as u32).max(1),
            ((h as f32 * f).round() as u32).max(1),
        );
        out.extend(level_features(&resize_triangle(gray, r, lw, lh), level, mirrored));
    }
    out
}

/// `imageops::resize(&cut, nw, nh, FilterType::Triangle)` of the `r` part of `gray`, value for
/// value (the same f32 weights and sums in the same order, tested against it), without
/// cutting the part out and without `image`'s generic path, which widens every grey pixel to
/// four f32 channels; the vertical pass also runs along rows, so its sums advance side by side.
fn resize_triangle(gray: &GrayImage, r: Rect, nw: u32, nh: u32) -> GrayImage {
    let (w, h) = (r.w as usize, r.h as usize);
    if w == 0 || h == 0 || (nw, nh) == (r.w, r.h) {
        return gray.view(r.x, r.y, r.w, r.h).to_image();
    }
    let stride = gray.width() as usize;
    let raw = gray.as_raw();
    let src_row = |y: usize| {
        let start = (r.y as usize + y) * stride + r.x as usize;
        &raw[start..start + w]
    };
    let mut mid = vec![0f32; w * nh as usize];
    for (outy, mid_row) in mid.chunks_exact_mut(w).enumerate() {
        let (left, ws) = triangle_weights(outy, h, nh as usize);
        for (i, &wt) in ws.iter().enumerate() {
            for (m, &v) in mid_row.iter_mut().zip(src_row(left + i)) {
                *m += f32::from(v) * wt;
            }
        }
    }
    let taps: Vec<(usize, Vec<f32>)> = (0..nw as usize).map(|x| triangle_weights(x, w, nw as usize)).collect();
    let mut out = GrayImage::new(nw, nh);
    for (out_row, mid_row) in out.chunks_exact_mut(nw as usize).zip(mid.chunks_exact(w)) {
        for (o, (left, ws)) in out_row.iter_mut().zip(&taps) {
            let mut t = 0f32;
            for (&m, &wt) in mid_row[*left..].iter().zip(ws) {
                t += m * wt;
            }
            *o = round_nonneg(t.clamp(0.0, 255.0)) as u8;
        }
    }
    out
}

/// `image`'s triangle-filter taps for output index `out` of `new_len` from `len` inputs: the
/// first input index and the normalised weights.
fn triangle_weights(out: usize, len: usize, new_len: usize) -> (usize, Vec<f32>) {
    let ratio = len as f32 / new_len as f32;
    let sratio = if ratio < 1.0 { 1.0 } else { ratio };
    // The triangle's support is 1, so `sratio` source pixels either side.
    let input = (out as f32 + 0.5) * ratio;
    let left = ((input - sratio).floor() as i64).clamp(0, len as i64 - 1);
    let right = ((input + sratio).ceil() as i64).clamp(left + 1, len as i64);
    let input = input - 0.5;
    let mut ws = Vec::with_capacity((right - left) as usize);
    let mut sum = 0.0;
    for i in left..right {
        let x = (i as f32 - input) / sratio;
        let wt = if x.abs() < 1.0 { 1.0 - x.abs() } else { 0.0 };
        ws.push(wt);
        sum += wt;
    }
    for wt in ws.iter_mut() {
        *wt /= sum;
    }
    (left as usize, ws)
}

/// `a.round()` (halves away from zero) for `a >= 0`, in operations that have vector forms:
/// `f32::round` is a library call per value on x86-64, the most expensive step of a resize or
/// blur. `a - a.trunc()` is exact, so the result is too (tested against `f32::round`).
#[inline(always)]
fn round_nonneg(a: f32) -> f32 {
    let t = a.trunc();
    if a - t >= 0.5 {
        t + 1.0
    } else {
        t
    }
}

/// Sigma of the blur the descriptor's tests read.
const BLUR_SIGMA: f32 = 2.0;

/// `imageops::blur(img, BLUR_SIGMA)`, value for value: `image`'s Gaussian kernel (11 taps at
/// sigma 2, built by the same f32 code), edges clamped, rows then columns, each output summed
/// as `image` sums it (centre tap, then the pairs of taps from the outside in, each pair added
/// before it is weighed; no fused multiply-add on this target), rounded to nearest. Runs each
/// pass along whole rows so the sums advance side by side in vector lanes (tested equal to
/// `imageops::blur`).
fn blur(img: &GrayImage) -> GrayImage {
    let kernel = gaussian_kernel();
    let half = kernel.len() / 2;
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == 0 || h == 0 {
        return img.clone();
    }
    let centre = kernel[half];
    let mut rows = vec![0f32; w * h];
    let mut padded = vec![0f32; w + 2 * half];
    for (src, out) in img.as_raw().chunks_exact(w).zip(rows.chunks_exact_mut(w)) {
        for (i, p) in padded.iter_mut().enumerate() {
            *p = f32::from(src[i.saturating_sub(half).min(w - 1)]);
        }
        for (o, &c) in out.iter_mut().zip(&padded[half..]) {
            *o = c * centre;
        }
        for (i, &k) in kernel.iter().take(half).enumerate() {
            let (fw, bw) = (&padded[i..], &padded[2 * half - i..]);
            for ((o, &a), &b) in out.iter_mut().zip(fw).zip(bw) {
                *o += (a + b) * k;
            }
        }
    }
    let row = |y: isize| {
        let y = y.clamp(0, h as isize - 1) as usize;
        &rows[y * w..(y + 1) * w]
    };
    let mut out = vec![0u8; w * h];
    let mut acc = vec![0f32; w];
    for (y, dst) in out.chunks_exact_mut(w).enumerate() {
        let y = y as isize;
        for (a, &c) in acc.iter_mut().zip(row(y)) {
            *a = c * centre;
        }
        for (i, &k) in kernel.iter().take(half).enumerate() {
            let (fw, bw) = (row(y - (half - i) as isize), row(y + (half - i) as isize));
            for ((a, &p), &q) in acc.iter_mut().zip(fw).zip(bw) {
                *a += (p + q) * k;
            }
        }
        for (d, &a) in dst.iter_mut().zip(&acc) {
            *d = round_nonneg(a).min(255.0) as u8;
        }
    }
    GrayImage::from_raw(img.width(), img.height(), out).unwrap_or_else(|| imageops::blur(img, BLUR_SIGMA))
}

/// `image`'s Gaussian kernel for [`BLUR_SIGMA`] (its `get_gaussian_kernel_1d`, with the size
/// its `GaussianBlurParameters::new_from_sigma` picks), in the same f32 operations.
fn gaussian_kernel() -> &'static [f32] {
    static KERNEL: OnceLock<Vec<f32>> = OnceLock::new();
    KERNEL.get_or_init(|| {
        let sigma = BLUR_SIGMA;
        let size = (((((sigma - 0.8) / 0.3) + 1.) * 2.) + 1.).max(3.) as usize;
        let size = size | 1;
        let scale = 1f32 / (f32::sqrt(2f32 * std::f32::consts::PI) * sigma);
        let mean = (size / 2) as f32;
        let mut kernel: Vec<f32> = (0..size)
            .map(|x| f32::exp(-0.5f32 * f32::powf((x as f32 - mean) / sigma, 2.0f32)) * scale)
            .collect();
        let sum: f32 = kernel.iter().fold(0f32, |s, &k| s + k);
        if sum != 0.0 {
            let inv = 1f32 / sum;
            kernel.iter_mut().for_each(|k| *k *= inv);
        }
        kernel
    })
}

/// Bresenham circle of radius 3 used by FAST, in order around the circle.
const CIRCLE: [(i32, i32); 16] = [
    (0, -3),
    (1, -3),
    (2, -2),
    (3, -1),
    (3, 0),
    (3, 1),
    (2, 2),
    (1, 3),
    (0, 3),
    (-1, 3),
    (-2, 2),
    (-3, 1),
    (-3, 0),
    (-3, -1),
    (-2, -2),
    (-1, -3),
];

/// FAST-9 scores of the `out.len()` pixels of a row from row-major index `at` (each at least
/// 3 pixels from every edge; `offsets` are [`CIRCLE`]'s as index offsets): 0 when not a
/// corner, else the summed contrast past the threshold.
///
/// A corner has a run of 9 circle pixels all brighter than the centre by more than
/// [`FAST_THRESHOLD`], or all darker. Pixels are worked [`LANES`] at a time, one circle
/// position after another (plain integer arithmetic, which the compiler runs in vector
/// lanes), keeping per pixel a 16-bit mask of the brighter and of the darker positions and
/// the contrast sum; then a run of 9 is 9 shifted copies of a mask ANDed together.
fn fast_row(raw: &[u8], at: usize, offsets: &[isize; 16], out: &mut [u32]) {
    // Blocks of LANES pixels in fixed-size arrays, so that every step is one vector
    // operation. The last block is moved back to end at the row's end (its first pixels are
    // worked twice, with the same result); only a row shorter than a block is padded.
    let len = out.len();
    let load = |start: usize| -> [i16; LANES] {
        let mut v = [0i16; LANES];
        match raw.get(start..start + LANES) {
            Some(bytes) => v.iter_mut().zip(bytes).for_each(|(v, &b)| *v = i16::from(b)),
            None => v.iter_mut().zip(&raw[start..]).for_each(|(v, &b)| *v = i16::from(b)),
        }
        v
    };
    let mut x = 0;
    while x < len {
        let start = if x + LANES <= len { x } else { len.saturating_sub(LANES) };
        let centre = load(at + start);
        let (mut brighter, mut darker, mut contrast) = ([0u16; LANES], [0u16; LANES], [0u16; LANES]);
        for (k, &off) in offsets.iter().enumerate() {
            let ring = load((at + start).wrapping_add_signed(off));
            for l in 0..LANES {
                let diff = ring[l] - centre[l];
                brighter[l] |= u16::from(diff > FAST_THRESHOLD) << k;
                darker[l] |= u16::from(diff < -FAST_THRESHOLD) << k;
                // At most 16 * 235: fits.
                contrast[l] += (diff.abs() - FAST_THRESHOLD).max(0) as u16;
            }
        }
        let (run_b, run_d) = (runs_of_9(&brighter), runs_of_9(&darker));
        let mut score = [0u32; LANES];
        for l in 0..LANES {
            score[l] = u32::from(contrast[l]) * u32::from(run_b[l] | run_d[l]);
        }
        let end = len.min(start + LANES);
        out[start..end].copy_from_slice(&score[..end - start]);
        x = start + LANES;
    }
}

/// Pixels per block of [`fast_row`].
const LANES: usize = 16;

/// Per lane, whether 9 consecutive positions of the circle (wrapping around) are set in the
/// mask: 9 shifted copies of the mask (doubled, for the wrap) ANDed.
fn runs_of_9(masks: &[u16; LANES]) -> [bool; LANES] {
    let twice = masks.map(|m| u32::from(m) * 0x1_0001);
    let mut run = twice;
    for k in 1..9 {
        for l in 0..LANES {
            run[l] &= twice[l] >> k;
        }
    }
    run.map(|r| r & 0xffff != 0)
}

/// The 256 point pairs compared by the descriptor: fixed-seed Gaussian offsets (sigma = patch
/// size / 5, as in the BRIEF paper) within the patch.
fn pairs() -> &'static [(i32, i32, i32, i32); 256] {
    static PAIRS: OnceLock<[(i32, i32, i32, i32); 256]> = OnceLock::new();
    PAIRS.get_or_init(|| {
        let mut state = 0x4252_4945_465f_7631u64;
        let mut next = || {
            // SplitMix64, then a sum of uniforms as a Gaussian; integer rounding only.
            let mut g = 0f64;
            for _ in 0..4 {
                state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                g += ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64;
            }
            let v = ((g - 2.0) * 1.732 * (2.0 * f64::from(PATCH) + 1.0) / 5.0).round() as i32;
            v.clamp(-PATCH, PATCH)
        };
        std::array::from_fn(|_| (next(), next(), next(), next()))
    })
}

fn level_features(img: &GrayImage, level: u8, mirrored: bool) -> Vec<Feature> {
    let (w, h) = (img.width() as i32, img.height() as i32);
    if w <= 2 * PATCH + 2 || h <= 2 * PATCH + 2 {
        return Vec::new();
    }
    let mut scores = vec![0u32; (w * h) as usize];
    let offsets = CIRCLE.map(|(dx, dy)| (dy * w + dx) as isize);
    let raw = img.as_raw();
    for y in PATCH..h - PATCH {
        let at = (y * w + PATCH) as usize;
        fast_row(raw, at, &offsets, &mut scores[at..at + (w - 2 * PATCH) as usize]);
    }
    // Non-maximum suppression over 3x3 (ties broken by position, so the result is stable).
    let mut corners: Vec<(u32, i32, i32)> = Vec::new();
    for y in PATCH..h - PATCH {
        for x in PATCH..w - PATCH {
            let s = scores[(y * w + x) as usize];
            if s == 0 {
                continue;
            }
            let is_max = (-1..=1).all(|dy| {
                (-1..=1).all(|dx| {
                    let o = scores[((y + dy) * w + x + dx) as usize];
                    (dx, dy) == (0, 0) || o < s || (o == s && (dy, dx) > (0, 0))
                })
            });
            if is_max {
                corners.push((s, x, y));
            }
        }
    }
    corners.sort_by_key(|&(s, x, y)| (std::cmp::Reverse(s), y, x));
    let smooth = blur(img);
    let smooth = smooth.as_raw();
    // The pairs as offsets from the corner's index: every corner is at least PATCH from the
    // edges, so every offset lands inside.
    let at = |dx: i32, dy: i32| (dy * w + dx) as isize;
    // FAST and the blur are symmetric, so the mirrored picture has the mirrored corners
    // and blurred pixels: its descriptor at a mirrored corner reads this picture with each
    // test's offsets mirrored (x negated).
    let describe = |flip: bool, level: u8| -> Vec<Feature> {
        let sign = if flip { -1 } else { 1 };
        let offsets: Vec<(isize, isize)> = pairs()
            .iter()
            .map(|&(x1, y1, x2, y2)| (at(sign * x1, y1), at(sign * x2, y2)))
            .collect();
        corners
            .iter()
            .map(|&(_, x, y)| {
                let centre = (y * w + x) as usize;
                let px = |off: isize| smooth[centre.wrapping_add_signed(off)];
                let mut bits = [0u64; 4];
                for (word, pairs) in bits.iter_mut().zip(offsets.chunks_exact(64)) {
                    for (i, &(a, b)) in pairs.iter().enumerate() {
                        *word |= u64::from(px(a) < px(b)) << i;
                    }
                }
                let x = if flip { w - 1 - x } else { x };
                Feature {
                    x: x as u16,
                    y: y as u16,
                    level,
                    bits,
                }
            })
            .filter(distinctive)
            .take(MAX_FEATURES)
            .collect()
    };
    let mut out = describe(false, level);
    if mirrored {
        out.extend(describe(true, level + MIRRORED));
    }
    out
}

/// Whether a descriptor says something specific. A patch that is one straight edge or
/// gradient answers most tests alike (popcount far from half) and looks like every other
/// such patch; such descriptors would crowd the index's buckets and match anything.
fn distinctive(f: &Feature) -> bool {
    let ones: u32 = f.bits.iter().map(|w| w.count_ones()).sum();
    let lopsided_substring = f
        .bits
        .iter()
        .flat_map(|w| (0..4).map(move |k| (w >> (16 * k)) as u16))
        .any(|s| s.count_ones() <= 1 || s.count_ones() >= 15);
    (80..=176).contains(&ones) && !lopsided_substring
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::imageops::FilterType;

    /// FAST-9 as defined, one pixel at a time: the longest run of brighter (darker) circle
    /// pixels, wrapping around, and the contrast sum.
    fn fast_score_by_definition(raw: &[u8], i: usize, offsets: &[isize; 16]) -> u32 {
        let p = i16::from(raw[i]);
        let circle: [i16; 16] = std::array::from_fn(|k| i16::from(raw[i.wrapping_add_signed(offsets[k])]));
        let longest = |hit: &dyn Fn(i16) -> bool| {
            let (mut best, mut cur) = (0, 0);
            for k in 0..32 {
                cur = if hit(circle[k % 16]) { cur + 1 } else { 0 };
                best = best.max(cur);
            }
            best
        };
        if longest(&|v| v > p + FAST_THRESHOLD) < 9 && longest(&|v| v < p - FAST_THRESHOLD) < 9 {
            return 0;
        }
        circle
            .iter()
            .map(|&v| u32::from(((v - p).abs() - FAST_THRESHOLD).max(0) as u16))
            .sum()
    }

    #[test]
    fn fast_rows_equal_the_definition() {
        // Blobs, edges and noise: corners of every kind, and runs that wrap around.
        let (w, h) = (131usize, 67usize);
        let img = GrayImage::from_fn(w as u32, h as u32, |x, y| {
            let blob = ((x / 9 + y / 7) % 3) as u8 * 90;
            let noise = ((x * 7919 + y * 104_729) ^ (x * y)) % 37;
            image::Luma([blob.saturating_add(noise as u8)])
        });
        let raw = img.as_raw();
        let offsets = CIRCLE.map(|(dx, dy)| dy as isize * w as isize + dx as isize);
        let (mut corners, mut compared) = (0, 0);
        for y in 3..h - 3 {
            let mut row = vec![0u32; w - 6];
            fast_row(raw, y * w + 3, &offsets, &mut row);
            for (x, &got) in (3..).zip(&row) {
                assert_eq!(got, fast_score_by_definition(raw, y * w + x, &offsets), "({x}, {y})");
                corners += usize::from(got > 0);
                compared += 1;
            }
        }
        assert!(
            corners > 100 && corners < compared / 2,
            "{corners} corners of {compared}"
        );
        for first in (0..=u16::MAX).step_by(LANES) {
            let masks: [u16; LANES] = std::array::from_fn(|l| first + l as u16);
            for (mask, got) in masks.into_iter().zip(runs_of_9(&masks)) {
                let doubled = (0..32).map(|k| mask >> (k % 16) & 1);
                let longest = doubled
                    .scan(0, |cur, bit| {
                        *cur = if bit == 1 { *cur + 1 } else { 0 };
                        Some(*cur)
                    })
                    .max();
                assert_eq!(got, longest >= Some(9), "{mask:016b}");
            }
        }
    }

    #[test]
    fn round_nonneg_equals_round() {
        // Every 61st f32 from 0 to past 256, and the floats around each half.
        let spread = (0..0x4381_0000u32).step_by(61).map(f32::from_bits);
        let halves = (0..=512u32).flat_map(|h| {
            let bits = (h as f32 / 2.0).to_bits();
            (bits.saturating_sub(3)..bits + 3).map(f32::from_bits)
        });
        for a in spread.chain(halves) {
            assert_eq!(round_nonneg(a), a.round(), "{a:e}");
        }
    }

    #[test]
    fn blur_equals_image_blur() {
        for (w, h) in [(320, 240), (97, 61), (33, 200), (35, 35), (7, 3), (1, 1), (16, 40)] {
            let gray = GrayImage::from_fn(w, h, |x, y| {
                image::Luma([((x * 37 + y * 11) ^ (x * y / 3)).wrapping_mul(2_654_435_761) as u8])
            });
            assert_eq!(blur(&gray), imageops::blur(&gray, BLUR_SIGMA), "{w}x{h}");
        }
        let flat = GrayImage::from_pixel(40, 40, image::Luma([255]));
        assert_eq!(blur(&flat), flat);
    }

    #[test]
    fn grayscale_equals_image_grayscale() {
        let rgb = RgbImage::from_fn(97, 61, |x, y| {
            image::Rgb([(x * 37 % 256) as u8, ((x * y + 11) % 256) as u8, (y * 53 % 256) as u8])
        });
        assert_eq!(grayscale(&rgb), imageops::grayscale(&rgb));
        let extremes = RgbImage::from_fn(2, 2, |x, y| image::Rgb([255 * (x as u8 & 1), 255, 255 * (y as u8 & 1)]));
        assert_eq!(grayscale(&extremes), imageops::grayscale(&extremes));
    }

    #[test]
    fn resize_triangle_equals_image_resize() {
        let gray = GrayImage::from_fn(517, 389, |x, y| {
            image::Luma([((x * x / 7 + y * 13 + x * y) % 256) as u8])
        });
        let parts = [
            Rect {
                x: 0,
                y: 0,
                w: 517,
                h: 389,
            },
            Rect {
                x: 31,
                y: 17,
                w: 400,
                h: 300,
            },
            Rect {
                x: 100,
                y: 50,
                w: 137,
                h: 251,
            },
            Rect {
                x: 3,
                y: 5,
                w: 40,
                h: 33,
            },
        ];
        for r in parts {
            let cut = gray.view(r.x, r.y, r.w, r.h).to_image();
            for (nw, nh) in [
                (320, 240),
                (400, 300),
                (r.w, r.h),
                (97, 413),
                (1, 1),
                (r.w * 2, r.h / 3 + 1),
            ] {
                assert_eq!(
                    resize_triangle(&gray, r, nw, nh),
                    imageops::resize(&cut, nw, nh, FilterType::Triangle),
                    "{r:?} to {nw}x{nh}"
                );
            }
        }
    }
}
