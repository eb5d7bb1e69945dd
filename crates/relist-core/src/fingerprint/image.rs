//! Image decoding with limits.
//!
//! Decoding is where hostile input arrives (truncated files, decompression bombs), so every
//! limit is checked before pixels are allocated and every failure is an error, never a panic.
use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

/// Limits applied to every encoded image before and while decoding.
#[derive(Clone, Copy, Debug)]
pub struct DecodeLimits {
    /// Largest accepted encoded file, in bytes.
    pub max_bytes: usize,
    /// Largest accepted width x height (decompression-bomb guard).
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_bytes: 20 * 1024 * 1024,
            max_pixels: 40_000_000,
        }
    }
}

/// Why an image could not be decoded; the caller names the field.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("empty image data")]
    Empty,
    #[error("image data is {0} bytes, over the limit of {1}")]
    TooManyBytes(usize, usize),
    #[error("not a JPEG, PNG, WebP or GIF image")]
    UnknownFormat,
    #[error("image is {0}x{1} = {2} pixels, over the limit of {3}")]
    TooManyPixels(u32, u32, u64, u64),
    #[error("image data is truncated")]
    Truncated,
    #[error("image has no pixels")]
    NoPixels,
    #[error("cannot decode image: {0}")]
    Decode(String),
}

/// Decodes JPEG, PNG, WebP or GIF (first frame) bytes and applies the EXIF orientation, so a
/// photo shown upright by a browser hashes as upright.
pub fn decode(bytes: &[u8], limits: DecodeLimits) -> Result<DynamicImage, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    if bytes.len() > limits.max_bytes {
        return Err(DecodeError::TooManyBytes(bytes.len(), limits.max_bytes));
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| DecodeError::Decode(e.to_string()))?;
    match reader.format() {
        Some(ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP | ImageFormat::Gif) => {}
        _ => return Err(DecodeError::UnknownFormat),
    }
    // JPEG decoders paint a cut-off file grey and carry on; its hash would describe a
    // different picture, so an incomplete upload is refused instead.
    if reader.format() == Some(ImageFormat::Jpeg) && !jpeg_is_complete(bytes) {
        return Err(DecodeError::Truncated);
    }
    let mut reader = reader;
    let mut io_limits = image::Limits::default();
    // Belt and braces: the decoder itself also refuses to allocate past this.
    io_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8).max(1 << 20));
    reader.limits(io_limits);
    let mut decoder = reader.into_decoder().map_err(|e| DecodeError::Decode(e.to_string()))?;
    let (w, h) = decoder.dimensions();
    let pixels = u64::from(w) * u64::from(h);
    if pixels == 0 {
        return Err(DecodeError::NoPixels);
    }
    if pixels > limits.max_pixels {
        return Err(DecodeError::TooManyPixels(w, h, pixels, limits.max_pixels));
    }
    // A broken EXIF block must not reject an otherwise fine photo.
    let orientation = decoder.orientation().ok();
    let scaled = match dct_scale_factor(w, h) {
        Some(f) if reader_format_is_jpeg(bytes) => decode_jpeg_scaled(bytes, f),
        _ => None,
    };
    let mut img = match scaled {
        Some(img) => img,
        None => DynamicImage::from_decoder(decoder).map_err(|e| DecodeError::Decode(e.to_string()))?,
    };
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    Ok(img)
}

/// Shortest side a large JPEG is decoded down to, at least. Measured on the dev photos
/// (`cargo bench --bench fingerprint`): decoding 2000x1500 JPEGs at 1/2 scale moves PDQ by at
/// most 2 bits and pHash by at most 2 (PDQ's match radius is 31); going down to 500x375 moved
/// PDQ by up to 16 bits, so the floor keeps images well above that.
const SCALED_MIN_SIDE: u32 = 750;

/// The DCT-domain scale-down (2, 4 or 8) for a `w` x `h` JPEG: the largest that keeps the
/// shortest side at or over [`SCALED_MIN_SIDE`]; `None` for images that small already.
fn dct_scale_factor(w: u32, h: u32) -> Option<u16> {
    let short = w.min(h);
    [8u16, 4, 2]
        .into_iter()
        .find(|&f| short / u32::from(f) >= SCALED_MIN_SIDE)
}

fn reader_format_is_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xFF, 0xD8])
}

/// Decodes a JPEG straight to 1/`factor` of its size in the DCT domain (jpeg-decoder), which
/// skips most of the inverse DCT and the resampling that hashing would do anyway: about 2x
/// less time for a 2000x1500 photo. `None` (and the caller decodes in full) for anything this
/// path does not handle, such as CMYK.
pub fn decode_jpeg_scaled(bytes: &[u8], factor: u16) -> Option<DynamicImage> {
    let mut d = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    d.read_info().ok()?;
    let info = d.info()?;
    let (w, h) = d
        .scale(info.width.div_ceil(factor), info.height.div_ceil(factor))
        .ok()?;
    let px = d.decode().ok()?;
    let (w, h) = (u32::from(w), u32::from(h));
    match d.info()?.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => image::RgbImage::from_raw(w, h, px).map(DynamicImage::ImageRgb8),
        jpeg_decoder::PixelFormat::L8 => image::GrayImage::from_raw(w, h, px).map(DynamicImage::ImageLuma8),
        _ => None,
    }
}

/// A small JPEG of the image (longest side `max_side`), for people to look at; `None` if
/// encoding fails, which only costs the picture.
pub fn thumbnail_jpeg(img: &DynamicImage, max_side: u32) -> Option<Vec<u8>> {
    let small = match img {
        DynamicImage::ImageRgb8(rgb) => shrink(rgb, max_side),
        other => shrink(&other.to_rgb8(), max_side),
    };
    let mut out = Vec::new();
    let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 75);
    small.write_with_encoder(enc).ok()?;
    Some(out)
}

/// `img` fitted within `max_side` (never enlarged), each pixel the mean of the block of source
/// pixels it covers. Only looked at, never hashed: a box mean is all a thumbnail needs, and
/// a few times cheaper than `image`'s `thumbnail` (1.4 ms for a 500x375 photo), which the
/// check of a matching listing pays.
fn shrink(img: &RgbImage, max_side: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let long = w.max(h);
    if long <= max_side || w == 0 || h == 0 {
        return img.clone();
    }
    let fit = |len: u32| ((u64::from(len) * u64::from(max_side)).div_ceil(u64::from(long)) as u32).clamp(1, len);
    let (tw, th) = (fit(w), fit(h));
    // Block edges: output pixel i covers source pixels edges[i]..edges[i + 1] (at least one).
    let edges = |len: u32, n: u32| -> Vec<usize> {
        (0..=n)
            .map(|i| (u64::from(i) * u64::from(len) / u64::from(n)) as usize)
            .collect()
    };
    let (xs, ys) = (edges(w, tw), edges(h, th));
    let raw = img.as_raw();
    let stride = w as usize * 3;
    let mut sums = vec![0u32; stride];
    let mut out = Vec::with_capacity(tw as usize * th as usize * 3);
    for rows in ys.windows(2) {
        sums.iter_mut().for_each(|s| *s = 0);
        for row in raw[rows[0] * stride..rows[1] * stride].chunks_exact(stride) {
            sums.iter_mut().zip(row).for_each(|(s, &v)| *s += u32::from(v));
        }
        for cols in xs.windows(2) {
            let n = ((rows[1] - rows[0]) * (cols[1] - cols[0])) as u32;
            for c in 0..3 {
                let total: u32 = sums[cols[0] * 3 + c..cols[1] * 3].iter().step_by(3).sum();
                out.push(((total + n / 2) / n) as u8);
            }
        }
    }
    RgbImage::from_raw(tw, th, out).unwrap_or_else(|| img.clone())
}

/// Whether the last start-of-scan marker (FF DA) is followed by an end-of-image marker
/// (FF D9). Entropy-coded data never holds FF D9 (FF is byte-stuffed), and an embedded EXIF
/// thumbnail's own markers come before the main image's scan, so this catches truncation of
/// the main image while allowing trailers after the end.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last = |marker: u8| bytes.windows(2).rposition(|w| w[0] == 0xff && w[1] == marker);
    match (last(0xda), last(0xd9)) {
        (Some(sos), Some(eoi)) => eoi > sos,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(w: u32, h: u32) -> DynamicImage {
        DynamicImage::ImageRgb8(image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
                ((x * 7 + y * 3) % 256) as u8,
                ((x * y) % 256) as u8,
                (((x ^ y) * 5) % 256) as u8,
            ])
        }))
    }

    fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    #[test]
    fn decodes_every_accepted_format_and_orients() {
        let img = pattern(64, 48);
        for format in [ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::Gif, ImageFormat::WebP] {
            let bytes = encode(&img, format);
            let out = decode(&bytes, DecodeLimits::default()).unwrap_or_else(|e| panic!("{format:?}: {e}"));
            assert_eq!((out.width(), out.height()), (64, 48), "{format:?}");
        }
        let mut bmp = b"BM".to_vec();
        bmp.extend_from_slice(&[0u8; 64]);
        assert!(matches!(
            decode(&bmp, DecodeLimits::default()),
            Err(DecodeError::UnknownFormat)
        ));
    }

    #[test]
    fn exif_orientation_is_applied() {
        let jpeg = encode(&pattern(64, 48), ImageFormat::Jpeg);
        // APP1 Exif segment, big-endian TIFF, one IFD entry: Orientation (0x0112) = 6, which
        // means "rotate 90 degrees clockwise to display".
        let mut tiff = b"MM\0\x2a\0\0\0\x08".to_vec();
        tiff.extend_from_slice(&[0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0]);
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(&tiff);
        let mut out = jpeg[..2].to_vec();
        out.extend_from_slice(&[0xff, 0xe1]);
        out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(&app1);
        out.extend_from_slice(&jpeg[2..]);
        let img = decode(&out, DecodeLimits::default()).unwrap();
        assert_eq!(
            (img.width(), img.height()),
            (48, 64),
            "orientation 6 turns a landscape photo upright"
        );
    }

    #[test]
    fn limits_are_checked_before_decoding() {
        let bytes = encode(&pattern(100, 100), ImageFormat::Png);
        let small = DecodeLimits {
            max_bytes: 10,
            max_pixels: 1_000_000,
        };
        assert!(matches!(decode(&bytes, small), Err(DecodeError::TooManyBytes(..))));
        let few = DecodeLimits {
            max_bytes: 1 << 20,
            max_pixels: 9_999,
        };
        assert!(matches!(
            decode(&bytes, few),
            Err(DecodeError::TooManyPixels(100, 100, 10_000, 9_999))
        ));
        assert!(matches!(decode(&[], DecodeLimits::default()), Err(DecodeError::Empty)));
    }

    #[test]
    fn large_jpegs_decode_scaled_and_hash_alike() {
        // A smooth photo-like picture at 2000x1500: decoded at half size, oriented the same.
        let big = DynamicImage::ImageRgb8(image::RgbImage::from_fn(2000, 1500, |x, y| {
            let (xf, yf) = (x as f32, y as f32);
            let mut v = 128.0 + 40.0 * (xf / 97.0 + yf / 211.0).sin() + 30.0 * (yf / 53.0 - xf / 301.0).cos();
            // Blocks of different brightness: structure at several scales, as in a photo.
            if (x / 250 + y / 190) % 3 == 0 {
                v = v * 0.5 + 20.0;
            }
            if ((xf - 1300.0).powi(2) + (yf - 600.0).powi(2)) < 300.0f32.powi(2) {
                v = 255.0 - v * 0.6;
            }
            let v = v.clamp(0.0, 255.0) as u8;
            image::Rgb([v, v / 2 + (x / 16) as u8 / 2, 255 - v])
        }));
        let bytes = encode(&big, ImageFormat::Jpeg);
        let img = decode(&bytes, DecodeLimits::default()).unwrap();
        assert_eq!((img.width(), img.height()), (1000, 750));
        let full =
            DynamicImage::from_decoder(image::codecs::jpeg::JpegDecoder::new(Cursor::new(&bytes)).unwrap()).unwrap();
        let (a, b) = (
            crate::fingerprint::pdq::pdq_hash(&img),
            crate::fingerprint::pdq::pdq_hash(&full),
        );
        assert!(b.quality >= 50, "test picture too plain: quality {}", b.quality);
        let d = a.hash.distance(&b.hash);
        assert!(d <= 6, "PDQ moved {d} bits");
        assert_eq!(dct_scale_factor(1499, 4000), None);
        assert_eq!(dct_scale_factor(1500, 2000), Some(2));
        assert_eq!(dct_scale_factor(6000, 8000), Some(8));
        // Small JPEGs keep their size.
        let small = encode(&pattern(640, 480), ImageFormat::Jpeg);
        assert_eq!(decode(&small, DecodeLimits::default()).unwrap().width(), 640);
    }

    #[test]
    fn jpeg_completeness() {
        let bytes = encode(&pattern(64, 48), ImageFormat::Jpeg);
        assert!(jpeg_is_complete(&bytes));
        assert!(!jpeg_is_complete(&bytes[..bytes.len() - 2]));
        let mut trailer = bytes.clone();
        trailer.extend_from_slice(b"trailing bytes after EOI");
        assert!(jpeg_is_complete(&trailer));
        assert!(decode(&bytes[..bytes.len() * 2 / 3], DecodeLimits::default()).is_err());
    }

    #[test]
    fn thumbnails_fit_and_average_their_blocks() {
        for (w, h) in [(500, 375), (375, 500), (161, 20), (1000, 1000), (100, 50), (161, 1)] {
            let img = pattern(w, h);
            let small = shrink(&img.to_rgb8(), 160);
            let (tw, th) = small.dimensions();
            assert_eq!(tw.max(th), w.max(h).min(160), "{w}x{h} -> {tw}x{th}");
            assert!(tw >= 1 && th >= 1);
            let jpeg = thumbnail_jpeg(&img, 160).expect("encodes");
            let back = image::load_from_memory(&jpeg).expect("decodes");
            assert_eq!((back.width(), back.height()), (tw, th));
        }
        // A flat picture stays flat; a half-black, half-white one keeps its halves.
        let flat = RgbImage::from_pixel(640, 480, image::Rgb([10, 200, 30]));
        assert!(shrink(&flat, 160).pixels().all(|p| p.0 == [10, 200, 30]));
        let halves = RgbImage::from_fn(640, 480, |x, _| image::Rgb([if x < 320 { 0 } else { 255 }; 3]));
        let small = shrink(&halves, 160);
        assert_eq!(small.get_pixel(0, 0).0, [0; 3]);
        assert_eq!(small.get_pixel(159, 119).0, [255; 3]);
    }
}
