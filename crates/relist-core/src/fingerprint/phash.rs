//! imagehash-compatible perceptual hash (`imagehash.phash`, hash_size 8, highfreq_factor 4).
//!
//! Python's `imagehash.phash` computes
//! `image.convert("L").resize((32, 32), Image.Resampling.LANCZOS)`, a 2-D DCT-II
//! (`scipy.fftpack.dct` along axis 0, then axis 1, unnormalised), keeps the top-left 8x8
//! block and sets bit i when coefficient i is greater than the median of the 64.
//!
//! To agree with it bit for bit this module emulates Pillow exactly:
//! * `convert("L")`: ITU-R 601-2 luma with Pillow's fixed-point rounding,
//!   `L = (R*19595 + G*38470 + B*7471 + 0x8000) >> 16`; alpha is ignored (Pillow ignores
//!   it too). 16-bit inputs are narrowed the way Pillow opens 16-bit PNGs (colour and
//!   grey+alpha: high byte; plain grey is opened as `I;16`, whose conversion to `L`
//!   clips at 255). Float images go through the `image` crate's RGB8 conversion (Pillow
//!   has no float RGB mode).
//! * `resize((32, 32), LANCZOS)` on an 8-bit image (`ImagingResample`,
//!   `libImaging/Resample.c`): per-axis coefficients in f64 with Pillow's formulas
//!   (support 3 * scale when downscaling, libm `sin`), normalised, converted to 22-bit
//!   fixed point; two separable passes, each rounding (+2^21), shifting and clipping to
//!   an 8-bit intermediate; a pass is skipped when that axis already has 32 pixels.
//!   Pass order: Pillow <= 12 always runs the horizontal pass first (on only the rows the
//!   vertical pass reads); Pillow 13 runs the vertical pass first when the height shrinks
//!   by more than twice as many pixels as the width (`h - 32 > 2 * (w - 32)`, tall
//!   images). The order changes a level here and there in the 32x32 image and so, now
//!   and then, a bit of the hash: [`phash`] follows Pillow 13 (what `pip install
//!   imagehash` brings today), [`phash_pillow12`] the older rule, for hashes stored
//!   before that.
//! * DCT in f64 evaluated directly (only the 8x32 + 8x8 coefficients needed), median as
//!   numpy computes it (mean of the two middle values), bit = coefficient > median.
//!
//! Remaining sources of disagreement with imagehash lie outside this function: the pixels
//! handed in (the `image` crate decodes JPEG with zune-jpeg, Pillow with libjpeg-turbo;
//! they differ by a level here and there), and, for degenerate images whose DCT
//! coefficients tie exactly with the median (flat or symmetric synthetic images),
//! floating-point noise: scipy computes the DCT through an FFT.

use image::DynamicImage;
use std::borrow::Cow;
use std::cell::RefCell;
use std::f64::consts::PI;
use std::rc::Rc;
use std::sync::OnceLock;

/// Where `scripts/imagehash_golden.py` writes imagehash's values for the dev photos (relative
/// to the project root); they derive from the evaluation data, so they are never committed.
pub const IMAGEHASH_GOLDEN_DEFAULT: &str = "target/imagehash-photos-dev.csv";

/// Side of the square image the DCT runs on (hash_size * highfreq_factor).
const IMG: usize = 32;
/// Side of the low-frequency block kept (hash_size).
const HASH: usize = 8;
/// Pillow's fixed-point precision for 8-bit resampling: 32 - 8 - 2.
const PRECISION_BITS: u32 = 22;
/// Lanczos-3 support (Pillow's `LANCZOS.support`).
const LANCZOS_SUPPORT: f64 = 3.0;

/// imagehash-compatible 64-bit pHash (imagehash.phash, hash_size 8): bit i of the u64, counting from the most significant, is coefficient i of the 8x8 block in row-major order.
///
/// `format!("{:016x}", phash(img))` equals `str(imagehash.phash(pil_img))` as computed
/// with Pillow 13 or later. An image with a zero width or height (which Pillow refuses
/// to resize) hashes to 0.
pub fn phash(img: &DynamicImage) -> u64 {
    phash_impl(img, PassOrder::Pillow13)
}

/// [`phash`] as imagehash computed it with Pillow 12 or older (horizontal resize pass
/// always first). Differs from [`phash`] only for images whose height shrinks by more
/// than twice as many pixels as their width, and there only now and then, by a bit or two.
pub fn phash_pillow12(img: &DynamicImage) -> u64 {
    phash_impl(img, PassOrder::HorizontalFirst)
}

#[derive(Clone, Copy)]
enum PassOrder {
    /// Pillow <= 12.
    HorizontalFirst,
    /// Pillow >= 13: vertical first when `h - 32 > 2 * (w - 32)` and `h > 32`.
    Pillow13,
}

fn phash_impl(img: &DynamicImage, order: PassOrder) -> u64 {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == 0 || h == 0 {
        return 0;
    }
    let gray = to_pillow_l(img);
    let small = resize_to_32(&gray, w, h, order);
    hash_from_pixels(&small)
}

// ---------------------------------------------------------------------------------------
// Pillow "L" conversion
// ---------------------------------------------------------------------------------------

#[inline(always)]
fn luma(r: u8, g: u8, b: u8) -> u8 {
    // Pillow Convert.c: L24(rgb) >> 16.
    ((r as u32 * 19595 + g as u32 * 38470 + b as u32 * 7471 + 0x8000) >> 16) as u8
}

fn rgb8_to_l(px: &[u8], channels: usize) -> Vec<u8> {
    let mut out = vec![0u8; px.len() / channels];
    for (o, p) in out.iter_mut().zip(px.chunks_exact(channels)) {
        *o = luma(p[0], p[1], p[2]);
    }
    out
}

fn rgb16_to_l(px: &[u16], channels: usize) -> Vec<u8> {
    px.chunks_exact(channels)
        .map(|p| luma((p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8))
        .collect()
}

/// The image as Pillow's `convert("L")` sees it, row-major, one byte per pixel.
fn to_pillow_l(img: &DynamicImage) -> Cow<'_, [u8]> {
    match img {
        DynamicImage::ImageLuma8(b) => Cow::Borrowed(b.as_raw()),
        DynamicImage::ImageLumaA8(b) => b.as_raw().chunks_exact(2).map(|p| p[0]).collect(),
        DynamicImage::ImageRgb8(b) => rgb8_to_l(b.as_raw(), 3).into(),
        DynamicImage::ImageRgba8(b) => rgb8_to_l(b.as_raw(), 4).into(),
        DynamicImage::ImageLuma16(b) => b.as_raw().iter().map(|&p| p.min(255) as u8).collect(),
        DynamicImage::ImageLumaA16(b) => b.as_raw().chunks_exact(2).map(|p| (p[0] >> 8) as u8).collect(),
        DynamicImage::ImageRgb16(b) => rgb16_to_l(b.as_raw(), 3).into(),
        DynamicImage::ImageRgba16(b) => rgb16_to_l(b.as_raw(), 4).into(),
        other => rgb8_to_l(other.to_rgb8().as_raw(), 3).into(),
    }
}

// ---------------------------------------------------------------------------------------
// Pillow LANCZOS resampling (libImaging/Resample.c, 8 bits per channel)
// ---------------------------------------------------------------------------------------

#[inline]
fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        return 1.0;
    }
    let x = x * PI;
    x.sin() / x
}

#[inline]
fn lanczos(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// Fixed-point filter coefficients for one axis resized to 32 (`precompute_coeffs` +
/// `normalize_coeffs_8bpc`).
struct Coeffs {
    /// Per output pixel: first input index and number of taps.
    bounds: [(usize, usize); IMG],
    /// Row stride of `k`.
    ksize: usize,
    /// `32 * ksize` coefficients in 22-bit fixed point.
    k: Vec<i32>,
    /// The same split as `k = hi * 2^15 + lo` with `0 <= lo < 2^15`: 16-bit halves let the
    /// horizontal pass use 16x16->32-bit multiply-adds; the sum is the same integer.
    hi: Vec<i16>,
    lo: Vec<i16>,
}

impl Coeffs {
    fn new(in_size: usize) -> Coeffs {
        // Pillow passes the box as floats: in0 = 0, in1 = in_size.
        let in0 = 0.0f32;
        let in1 = in_size as f32;
        let scale = (in1 - in0) as f64 / IMG as f64;
        let filterscale = if scale < 1.0 { 1.0 } else { scale };
        let support = LANCZOS_SUPPORT * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let ss = 1.0 / filterscale;

        let mut bounds = [(0, 0); IMG];
        let mut k = vec![0i32; IMG * ksize];
        let mut w = vec![0f64; ksize];
        for (xx, bound) in bounds.iter_mut().enumerate() {
            let center = in0 as f64 + (xx as f64 + 0.5) * scale;
            // C's (int) casts truncate toward zero, as `as` does.
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) - xmin;
            let n = xmax.max(0) as usize;
            let mut ww = 0.0;
            for (x, wx) in w[..n].iter_mut().enumerate() {
                *wx = lanczos(((x as i64 + xmin) as f64 - center + 0.5) * ss);
                ww += *wx;
            }
            for (kx, &wx) in k[xx * ksize..xx * ksize + n].iter_mut().zip(&w[..n]) {
                let v = if ww != 0.0 { wx / ww } else { wx };
                let f = v * (1u32 << PRECISION_BITS) as f64;
                *kx = if v < 0.0 { (-0.5 + f) as i32 } else { (0.5 + f) as i32 };
            }
            *bound = (xmin as usize, n);
        }
        let hi = k.iter().map(|&v| (v >> 15) as i16).collect();
        let lo = k.iter().map(|&v| (v & 0x7fff) as i16).collect();
        Coeffs {
            bounds,
            ksize,
            k,
            hi,
            lo,
        }
    }

    /// Coefficients for `in_size`, from a small per-thread cache: photos come in a few
    /// sizes and the ~10k `sin` calls for a 500x375 image cost ~80 µs.
    fn cached(in_size: usize) -> Rc<Coeffs> {
        const ENTRIES: usize = 8;
        thread_local! {
            static CACHE: RefCell<Vec<(usize, Rc<Coeffs>)>> = const { RefCell::new(Vec::new()) };
        }
        CACHE.with(|cache| {
            let mut cache = cache.borrow_mut();
            if let Some(i) = cache.iter().position(|(size, _)| *size == in_size) {
                let hit = cache.remove(i);
                cache.insert(0, hit.clone());
                return hit.1;
            }
            let c = Rc::new(Coeffs::new(in_size));
            cache.truncate(ENTRIES - 1);
            cache.insert(0, (in_size, c.clone()));
            c
        })
    }

    /// First input index and coefficients of output pixel `i`.
    #[inline]
    fn taps(&self, i: usize) -> (usize, &[i32]) {
        let (start, n) = self.bounds[i];
        (start, &self.k[i * self.ksize..i * self.ksize + n])
    }

    /// Input range read by any output pixel (Pillow's `ybox_first..ybox_last`).
    fn span(&self) -> (usize, usize) {
        let (last, n) = self.bounds[IMG - 1];
        (self.bounds[0].0, last + n)
    }
}

/// Pillow's `clip8`: drop the fixed-point fraction, clamp to a byte.
#[inline(always)]
fn clip8(ss: i32) -> u8 {
    (ss >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Horizontal pass: rows `rows` of the `w`-wide `src` to 32 columns.
fn horizontal_pass(src: &[u8], w: usize, rows: (usize, usize), c: &Coeffs) -> Vec<u8> {
    let mut out = vec![0u8; IMG * (rows.1 - rows.0)];
    for (row, o) in src[rows.0 * w..rows.1 * w]
        .chunks_exact(w)
        .zip(out.chunks_exact_mut(IMG))
    {
        for (xx, o) in o.iter_mut().enumerate() {
            let (start, n) = c.bounds[xx];
            let at = xx * c.ksize;
            let (hi, lo) = (&c.hi[at..at + n], &c.lo[at..at + n]);
            let (mut sh, mut sl) = (0i32, 0i32);
            for ((&p, &h), &l) in row[start..start + n].iter().zip(hi).zip(lo) {
                sh = sh.wrapping_add(p as i16 as i32 * h as i32);
                sl = sl.wrapping_add(p as i16 as i32 * l as i32);
            }
            // Same integer as Pillow's sum of p * k (k = hi * 2^15 + lo).
            let ss = (1i32 << (PRECISION_BITS - 1))
                .wrapping_add(sh.wrapping_shl(15))
                .wrapping_add(sl);
            *o = clip8(ss);
        }
    }
    out
}

/// Vertical pass: the `w`-wide `src`, whose first row is input row `offset`, to 32 rows.
fn vertical_pass(src: &[u8], w: usize, offset: usize, c: &Coeffs) -> Vec<u8> {
    let mut out = vec![0u8; w * IMG];
    let mut acc = vec![0i32; w];
    for (yy, o) in out.chunks_exact_mut(w).enumerate() {
        let (start, k) = c.taps(yy);
        acc.fill(1 << (PRECISION_BITS - 1));
        for (row, &ky) in src[(start - offset) * w..].chunks_exact(w).zip(k) {
            for (a, &p) in acc.iter_mut().zip(row) {
                *a = a.wrapping_add((p as i32).wrapping_mul(ky));
            }
        }
        for (o, &a) in o.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    out
}

/// Pillow's `resize((32, 32), LANCZOS)` of a `w` x `h` "L" image.
fn resize_to_32(gray: &[u8], w: usize, h: usize, order: PassOrder) -> [u8; IMG * IMG] {
    let need_horizontal = w != IMG;
    let need_vertical = h != IMG;
    let horizontal_first = match order {
        PassOrder::HorizontalFirst => true,
        PassOrder::Pillow13 => {
            let (dw, dh) = (w as i64 - IMG as i64, h as i64 - IMG as i64);
            !(dh > 0 && dh > dw * 2)
        }
    };

    let mut cur: Cow<[u8]> = Cow::Borrowed(gray);
    if horizontal_first {
        let vert = Coeffs::cached(h);
        // Only the rows the vertical pass reads are resampled horizontally.
        let (first, last) = if need_vertical { vert.span() } else { (0, h) };
        if need_horizontal {
            cur = horizontal_pass(&cur, w, (first, last), &Coeffs::cached(w)).into();
        }
        if need_vertical {
            let offset = if need_horizontal { first } else { 0 };
            cur = vertical_pass(&cur, IMG, offset, &vert).into();
        }
    } else {
        // Only chosen when the height shrinks, so the vertical pass is needed.
        cur = vertical_pass(&cur, w, 0, &Coeffs::cached(h)).into();
        if need_horizontal {
            cur = horizontal_pass(&cur, w, (0, IMG), &Coeffs::cached(w)).into();
        }
    }
    let mut out = [0u8; IMG * IMG];
    out.copy_from_slice(&cur);
    out
}

// ---------------------------------------------------------------------------------------
// DCT, median, bits
// ---------------------------------------------------------------------------------------

/// `cos(pi * k * (2n + 1) / (2 * 32))` for k < 8, n < 32.
fn cos_table() -> &'static [[f64; IMG]; HASH] {
    static TABLE: OnceLock<[[f64; IMG]; HASH]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = [[0.0; IMG]; HASH];
        for (k, row) in t.iter_mut().enumerate() {
            for (n, c) in row.iter_mut().enumerate() {
                *c = (PI * (k * (2 * n + 1)) as f64 / (2 * IMG) as f64).cos();
            }
        }
        t
    })
}

/// Hash from the 32x32 "L" image: scipy DCT-II (no normalisation) along axis 0 then
/// axis 1, top-left 8x8, bit = coefficient > numpy median.
fn hash_from_pixels(px: &[u8; IMG * IMG]) -> u64 {
    let c = cos_table();
    // Axis 0 (down each column), only the first 8 frequencies.
    let mut a = [[0.0f64; IMG]; HASH];
    for (k, ak) in a.iter_mut().enumerate() {
        for (n, row) in px.chunks_exact(IMG).enumerate() {
            let ckn = c[k][n];
            for (s, &p) in ak.iter_mut().zip(row) {
                *s += p as f64 * ckn;
            }
        }
        for s in ak.iter_mut() {
            *s *= 2.0;
        }
    }
    // Axis 1 (along each row), only the first 8 frequencies.
    let mut coef = [0.0f64; HASH * HASH];
    for (k, ak) in a.iter().enumerate() {
        for l in 0..HASH {
            let s: f64 = ak.iter().zip(&c[l]).map(|(&x, &cl)| x * cl).sum();
            coef[k * HASH + l] = 2.0 * s;
        }
    }
    let mut sorted = coef;
    sorted.sort_unstable_by(f64::total_cmp);
    let median = (sorted[HASH * HASH / 2 - 1] + sorted[HASH * HASH / 2]) / 2.0;
    coef.iter().fold(0u64, |h, &v| (h << 1) | u64::from(v > median))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayAlphaImage, GrayImage, Rgb, RgbImage, Rgba, RgbaImage};
    use std::path::{Path, PathBuf};

    fn manifest() -> PathBuf {
        // The project root: this crate is crates/relist-core.
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
    }

    fn hex(h: u64) -> String {
        format!("{h:016x}")
    }

    fn read_golden(path: &Path) -> Vec<(String, u64)> {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        text.lines()
            .skip(1) // header: filename,phash
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let (name, h) = l.trim().rsplit_once(',').expect("filename,phash");
                (name.to_string(), u64::from_str_radix(h, 16).expect("hex"))
            })
            .collect()
    }

    /// Nearest-rank percentile of sorted values.
    fn percentile(sorted: &[u32], p: f64) -> u32 {
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }

    /// Hashes every golden entry found in `dir`; returns the sorted distances.
    fn distances(dir: &Path, golden: &[(String, u64)], f: fn(&DynamicImage) -> u64) -> Vec<u32> {
        let mut d: Vec<u32> = golden
            .iter()
            .map(|(name, want)| {
                let img = image::open(dir.join(name)).unwrap_or_else(|e| panic!("decoding {name}: {e}"));
                let got = f(&img);
                let dist = (got ^ want).count_ones();
                if dist > 0 {
                    println!("{name}: ours {} imagehash {} distance {dist}", hex(got), hex(*want));
                }
                dist
            })
            .collect();
        d.sort_unstable();
        d
    }

    fn report(d: &[u32]) -> (u32, u32) {
        let median = percentile(d, 50.0);
        let p95 = percentile(d, 95.0);
        let max = *d.last().unwrap();
        let exact = d.iter().filter(|&&x| x == 0).count();
        println!(
            "{} photos: exact {exact}, median {median}, p95 {p95}, max {max}",
            d.len()
        );
        for v in 0..=max {
            let n = d.iter().filter(|&&x| x == v).count();
            if n > 0 {
                println!("  distance {v:2}: {n}");
            }
        }
        (median, p95)
    }

    /// imagehash's values for the dev photos, generated from ../shared/data by
    /// `scripts/imagehash_golden.py` (never committed: they derive from the evaluation data).
    fn imagehash_golden() -> Option<PathBuf> {
        let p = PathBuf::from(IMAGEHASH_GOLDEN_DEFAULT);
        let p = if p.is_absolute() { p } else { manifest().join(p) };
        p.is_file().then_some(p)
    }

    #[test]
    fn photos_dev_match_imagehash() {
        let dir = manifest().join("../shared/data/photos-dev");
        if !dir.is_dir() {
            println!("skipped: ../shared/data not found");
            return;
        }
        let Some(golden_csv) = imagehash_golden() else {
            println!("skipped: imagehash values not generated (scripts/imagehash_golden.py, run by .ci/run)");
            return;
        };
        let golden = read_golden(&golden_csv);
        assert_eq!(golden.len(), 500, "golden CSV rows");
        let start = std::time::Instant::now();
        let d = distances(&dir, &golden, phash);
        println!("decode+hash {:?} total", start.elapsed());
        let (median, p95) = report(&d);
        assert_eq!(median, 0, "median distance");
        assert!(p95 <= 2, "p95 distance {p95}");
    }

    /// Bit-exactness check independent of JPEG decoding: `PHASH_PILLOW_DECODED` names a
    /// directory holding the photos as decoded by Pillow, re-saved losslessly as PNG
    /// (`<photo name>.png`); every hash must then match exactly. With `PHASH_GOLDEN12` (a
    /// CSV made with Pillow 12) `phash_pillow12` is checked against it as well.
    #[test]
    #[ignore = "needs PHASH_PILLOW_DECODED"]
    fn pillow_decoded_photos_match_exactly() {
        let dir = PathBuf::from(std::env::var("PHASH_PILLOW_DECODED").expect("env var"));
        let png = |(n, h): (String, u64)| (format!("{n}.png"), h);
        let golden: Vec<_> = read_golden(&imagehash_golden().expect("imagehash values generated"))
            .into_iter()
            .map(png)
            .collect();
        let d = distances(&dir, &golden, phash);
        report(&d);
        assert_eq!(*d.last().unwrap(), 0);
        if let Ok(csv12) = std::env::var("PHASH_GOLDEN12") {
            let golden: Vec<_> = read_golden(Path::new(&csv12)).into_iter().map(png).collect();
            let d = distances(&dir, &golden, phash_pillow12);
            print!("Pillow 12: ");
            report(&d);
            assert_eq!(*d.last().unwrap(), 0);
        }
    }

    // Synthetic images: the same integer formulas are written out as PNG by
    // `write_synthetic_pngs` (run with PHASH_WRITE_SYNTHETIC=dir) and regenerated with numpy
    // by `synthetic.py`, which checks the PNGs match and prints imagehash.phash of each.
    // The pinned hex strings are what imagehash 4.3.2 (scipy 1.17) printed with Pillow 13.0
    // and, for `phash_pillow12`, Pillow 12.3.

    /// 500x375 RGB: downscale by a non-integer factor on both axes.
    fn synth_rgb() -> DynamicImage {
        RgbImage::from_fn(500, 375, |x, y| {
            Rgb([
                ((x * x / 7 + y * 3) % 256) as u8,
                ((x * y / 13 + 2 * x) % 256) as u8,
                (((x ^ y) * 5 + y * y / 11) % 256) as u8,
            ])
        })
        .into()
    }

    /// 20x15 RGBA with varying alpha: upscale on both axes; alpha must be ignored.
    fn synth_rgba_small() -> DynamicImage {
        RgbaImage::from_fn(20, 15, |x, y| {
            Rgba([
                ((x * 13 + y * 7) % 256) as u8,
                ((x * x + y * 31) % 256) as u8,
                ((x * y * 3 + 40) % 256) as u8,
                ((x * 17 + y * 5) % 256) as u8,
            ])
        })
        .into()
    }

    /// 97x61 greyscale: odd sizes, downscale by under 3x vertically.
    fn synth_gray() -> DynamicImage {
        GrayImage::from_fn(97, 61, |x, y| {
            image::Luma([((x * 3 + y * y * 2 + (x * y) / 5) % 256) as u8])
        })
        .into()
    }

    /// 640x24 grey+alpha: downscale horizontally, upscale vertically.
    fn synth_gray_alpha() -> DynamicImage {
        GrayAlphaImage::from_fn(640, 24, |x, y| {
            image::LumaA([((x / 3 + y * 9 + (x % 7) * 11) % 256) as u8, (x % 256) as u8])
        })
        .into()
    }

    /// 32 wide x 45 high RGB: the horizontal pass is skipped, as in Pillow.
    fn synth_rgb_32() -> DynamicImage {
        RgbImage::from_fn(32, 45, |x, y| {
            Rgb([
                ((x * 8 + y) % 256) as u8,
                ((y * 5 + x * x) % 256) as u8,
                ((x * y + 3) % 256) as u8,
            ])
        })
        .into()
    }

    /// 45x300 RGB, tall: Pillow 13 runs the vertical pass first.
    fn synth_tall() -> DynamicImage {
        RgbImage::from_fn(45, 300, |x, y| {
            Rgb([
                ((x * 9 + y * 2 + (x * y) / 7) % 256) as u8,
                ((y * y / 7 + x * 3) % 256) as u8,
                ((x * x * 2 + y) % 256) as u8,
            ])
        })
        .into()
    }

    fn synthetic() -> Vec<(&'static str, DynamicImage, &'static str)> {
        vec![
            ("rgb_500x375", synth_rgb(), "800000f670fefeff"),
            ("rgba_20x15", synth_rgba_small(), "9b370b1274cd163d"),
            ("gray_97x61", synth_gray(), "82131f17171f1f1e"),
            ("graya_640x24", synth_gray_alpha(), "c09535650f7b0c7d"),
            ("rgb_32x45", synth_rgb_32(), "950e3c317f645d51"),
        ]
    }

    #[test]
    fn synthetic_images_match_imagehash() {
        for (name, img, want) in synthetic() {
            assert_eq!(hex(phash(&img)), want, "{name}");
            // None of these is tall: both Pillow pass orders agree.
            assert_eq!(hex(phash_pillow12(&img)), want, "{name} (Pillow 12)");
        }
    }

    #[test]
    fn tall_image_follows_pillow_pass_order() {
        // Chosen among formula variants because the pass order flips bits here.
        let img = synth_tall();
        assert_eq!(hex(phash(&img)), "8c2f072f08273f2f", "Pillow 13");
        assert_eq!(hex(phash_pillow12(&img)), "8c2f072f09073f2f", "Pillow 12");
    }

    #[test]
    #[ignore = "writes the synthetic PNGs to $PHASH_WRITE_SYNTHETIC"]
    fn write_synthetic_pngs() {
        let dir = PathBuf::from(std::env::var("PHASH_WRITE_SYNTHETIC").expect("env var"));
        std::fs::create_dir_all(&dir).unwrap();
        let tall = ("rgb_45x300", synth_tall(), "");
        for (name, img, _) in synthetic().into_iter().chain([tall]) {
            img.save(dir.join(format!("{name}.png"))).unwrap();
            println!("{name},{},{}", hex(phash(&img)), hex(phash_pillow12(&img)));
        }
    }

    /// 16-bit inputs, narrowed as Pillow opens 16-bit PNGs. Pinned hashes are imagehash's
    /// on these images saved as PNG by the `image` crate (Pillow opened them as RGB, RGBA,
    /// I;16 and RGBA).
    #[test]
    fn sixteen_bit_inputs_follow_pillow() {
        use image::{ImageBuffer, Luma, LumaA};
        let rgb = |x: u32, y: u32| [(x * 731 + y * 97) as u16, (x * y * 37) as u16, (y * y * 13 + x) as u16];
        let cases: [(&str, DynamicImage, &str); 4] = [
            (
                "rgb16",
                ImageBuffer::from_fn(90, 70, |x, y| Rgb(rgb(x, y))).into(),
                "813e71664d5b54ad",
            ),
            (
                "rgba16",
                ImageBuffer::from_fn(90, 70, |x, y| {
                    let [r, g, b] = rgb(x, y);
                    Rgba([r, g, b, (x * 500) as u16])
                })
                .into(),
                "813e71664d5b54ad",
            ),
            // Grey 16-bit is "I;16" in Pillow; its conversion to "L" clips at 255.
            (
                "l16",
                ImageBuffer::from_fn(90, 70, |x, y| Luma([((x * 7 + y * y) % 400) as u16])).into(),
                "8d0d0d0d4d0f5f5b",
            ),
            (
                "la16",
                ImageBuffer::from_fn(90, 70, |x, y| LumaA([(x * 731 + y * 97) as u16, (y * 900) as u16])).into(),
                "95aaaaaa6a2a572d",
            ),
        ];
        for (name, img, want) in cases {
            assert_eq!(hex(phash(&img)), want, "{name}");
        }
    }

    #[test]
    fn hash_bit_order_and_edge_cases() {
        // Constant images: every coefficient but the DC term is ~0, DC > median.
        let flat: DynamicImage = GrayImage::from_pixel(40, 30, image::Luma([128])).into();
        assert_eq!(phash(&flat) >> 63, 1);
        let empty: DynamicImage = GrayImage::new(0, 5).into();
        assert_eq!(phash(&empty), 0);
        // Same pixels through different layouts give the same hash.
        let rgb = synth_rgb();
        let gray: DynamicImage = DynamicImage::ImageLuma8(GrayImage::from_fn(500, 375, |x, y| {
            let p = rgb.as_rgb8().unwrap().get_pixel(x, y);
            image::Luma([luma(p[0], p[1], p[2])])
        }));
        assert_eq!(phash(&rgb), phash(&gray));
    }

    #[test]
    fn speed() {
        let img = synth_rgb();
        let n = if cfg!(debug_assertions) { 5 } else { 200 };
        let start = std::time::Instant::now();
        let mut acc = 0u64;
        for _ in 0..n {
            acc ^= phash(std::hint::black_box(&img));
        }
        println!("phash 500x375 RGB: {:?} per call ({acc:x})", start.elapsed() / n);
    }
}
