//! Makes the two sample images of the README quick start: `examples/images/takedown.jpg`, a
//! synthetic product photo (a sneaker on a studio background), and
//! `examples/images/reupload.jpg`, the same photo as a re-uploader would post it: mirrored,
//! with a shop watermark, re-encoded at a lower JPEG quality. Deterministic: running it again
//! writes the same bytes, which `tests/it/quick_start.rs` checks.
//!
//! ```sh
//! cargo run --example make_samples
//! ```
use image::{DynamicImage, Rgb, RgbImage};

/// Where the samples are, relative to the repository root.
pub const TAKEDOWN_JPG: &str = "examples/images/takedown.jpg";
pub const REUPLOAD_JPG: &str = "examples/images/reupload.jpg";

const SIZE: u32 = 320;

/// The product photo: a two-tone sneaker with stripes and laces on a warm gradient, with a
/// little deterministic grain so it is photo-like for the hashes.
fn product_photo() -> RgbImage {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut grain = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % 17) as f32 - 8.0
    };
    RgbImage::from_fn(SIZE, SIZE, |x, y| {
        let (xf, yf) = (x as f32 / SIZE as f32, y as f32 / SIZE as f32);
        // Studio background: warm at the top, grey at the floor, a soft shadow under the shoe.
        let mut c = [235.0 - 60.0 * yf, 205.0 - 50.0 * yf, 170.0 - 30.0 * yf];
        let shadow = ((xf - 0.5) / 0.38).powi(2) + ((yf - 0.78) / 0.06).powi(2);
        if shadow < 1.0 {
            c = c.map(|v| v * (0.6 + 0.4 * shadow));
        }
        // The sole: a long flat ellipse.
        let sole = ((xf - 0.5) / 0.36).powi(2) + ((yf - 0.7) / 0.05).powi(2);
        // The upper: a taller ellipse towards the heel, cut at the sole.
        let upper = ((xf - 0.42) / 0.3).powi(2) + ((yf - 0.58) / 0.17).powi(2);
        if upper < 1.0 && yf < 0.7 {
            c = [200.0, 30.0, 40.0];
            // Three white stripes across the side.
            let band = (xf * 2.0 + yf) * 12.0;
            if band.fract() < 0.25 && (0.3..0.6).contains(&xf) {
                c = [245.0, 245.0, 240.0];
            }
            // Laces: dark dots along the top.
            if ((xf - 0.55) * 40.0).sin() > 0.6 && (0.44..0.48).contains(&yf) && xf > 0.45 {
                c = [30.0, 30.0, 35.0];
            }
        }
        if sole < 1.0 {
            c = [250.0, 250.0, 250.0];
            if yf > 0.715 {
                c = [60.0, 60.0, 60.0];
            }
        }
        // A round brand logo on the heel.
        if ((xf - 0.2) / 0.05).powi(2) + ((yf - 0.6) / 0.05).powi(2) < 1.0 {
            c = [250.0, 200.0, 40.0];
        }
        let g = grain();
        Rgb(c.map(|v| (v + g).clamp(0.0, 255.0) as u8))
    })
}

fn jpeg(img: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality);
    DynamicImage::ImageRgb8(img.clone())
        .write_with_encoder(enc)
        .expect("JPEG encoding to memory");
    out
}

/// The two JPEGs: (takedown, reupload).
pub fn render() -> (Vec<u8>, Vec<u8>) {
    let photo = product_photo();
    let mut reupload = image::imageops::flip_horizontal(&photo);
    // The re-uploader's watermark: a white box with dark "text" bars in the bottom corner.
    for y in SIZE - 40..SIZE - 12 {
        for x in SIZE - 120..SIZE - 12 {
            let text = (y % 9 < 4) && (x / 7) % 3 != 0 && y > SIZE - 36 && y < SIZE - 16;
            let px = reupload.get_pixel_mut(x, y);
            *px = if text { Rgb([40, 40, 90]) } else { Rgb([250, 250, 250]) };
        }
    }
    (jpeg(&photo, 85), jpeg(&reupload, 70))
}

#[allow(dead_code)]
fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let (takedown, reupload) = render();
    for (path, bytes) in [(TAKEDOWN_JPG, takedown), (REUPLOAD_JPG, reupload)] {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().expect("a directory")).expect("create examples/images");
        std::fs::write(&path, &bytes).expect("write a sample image");
        println!("{} ({} bytes)", path.display(), bytes.len());
    }
}
