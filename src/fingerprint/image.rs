//! Image decoding with limits.
//!
//! Decoding is where hostile input arrives (truncated files, decompression bombs), so every
//! limit is checked before pixels are allocated and every failure is an error, never a panic.
use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

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
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| DecodeError::Decode(e.to_string()))?;
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    Ok(img)
}

/// A small JPEG of the image (longest side `max_side`), for people to look at; `None` if
/// encoding fails, which only costs the picture.
pub fn thumbnail_jpeg(img: &DynamicImage, max_side: u32) -> Option<Vec<u8>> {
    let small = img.thumbnail(max_side, max_side).to_rgb8();
    let mut out = Vec::new();
    let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 75);
    small.write_with_encoder(enc).ok()?;
    Some(out)
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
    fn jpeg_completeness() {
        let bytes = encode(&pattern(64, 48), ImageFormat::Jpeg);
        assert!(jpeg_is_complete(&bytes));
        assert!(!jpeg_is_complete(&bytes[..bytes.len() - 2]));
        let mut trailer = bytes.clone();
        trailer.extend_from_slice(b"trailing bytes after EOI");
        assert!(jpeg_is_complete(&trailer));
        assert!(decode(&bytes[..bytes.len() * 2 / 3], DecodeLimits::default()).is_err());
    }
}
