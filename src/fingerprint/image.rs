//! Image decoding with limits, and the 64-bit DCT pHash.
//!
//! Decoding is where hostile input arrives (truncated files, decompression bombs), so every
//! limit is checked before pixels are allocated and every failure is an error, never a panic.
use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};
use image_hasher::{HashAlg, Hasher, HasherConfig};

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

/// The 64-bit DCT perceptual hash (image_hasher's median pHash, 8x8 bits).
pub struct PHasher(Hasher);

impl Default for PHasher {
    fn default() -> Self {
        PHasher(
            HasherConfig::new()
                .hash_size(8, 8)
                .hash_alg(HashAlg::Median)
                .preproc_dct()
                .to_hasher(),
        )
    }
}

impl PHasher {
    /// The hash as a big-endian u64 of image_hasher's 8 bytes.
    pub fn hash(&self, img: &DynamicImage) -> u64 {
        let h = self.0.hash_image(img);
        let mut b = [0u8; 8];
        for (dst, src) in b.iter_mut().zip(h.as_bytes()) {
            *dst = *src;
        }
        u64::from_be_bytes(b)
    }
}
