//! The evasions a re-uploading seller applies to a taken-down photo, generated deterministically
//! (no randomness outside a seeded generator) so every run measures the same images.
use image::imageops::{self, FilterType};
use image::{DynamicImage, Rgb, RgbImage};

use super::font;
use relist_core::fingerprint::image::{decode, DecodeLimits};

/// One generated evasion: a name for reports and how to make it from a photo (and, for the
/// collage, from other photos).
#[derive(Clone, Copy, Debug)]
pub struct Transform {
    pub name: &'static str,
    /// The photo's group in reports (e.g. every crop is "crop").
    pub group: &'static str,
    kind: Kind,
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Jpeg(u8),
    ResizeFactor(f32),
    ResizeWidth(u32),
    Blur(f32),
    Gamma(f32),
    Noise(f32),
    Vignette,
    Watermark,
    TextOverlay,
    Crop { keep: f32, centred: bool },
    Border(f32),
    Mirror,
    Rotate90,
    Rotate(f32),
    Saturation(f32),
    Contrast(f32),
    Screenshot,
    Collage,
}

const fn t(name: &'static str, group: &'static str, kind: Kind) -> Transform {
    Transform { name, group, kind }
}

/// Every evasion the evaluation measures, in report order.
pub const ALL: &[Transform] = &[
    t("jpeg_q95", "jpeg", Kind::Jpeg(95)),
    t("jpeg_q30", "jpeg", Kind::Jpeg(30)),
    t("resize_50pct", "resize", Kind::ResizeFactor(0.5)),
    t("resize_300w", "resize", Kind::ResizeWidth(300)),
    t("blur_sigma2", "blur", Kind::Blur(2.0)),
    t("gamma_2", "gamma", Kind::Gamma(2.0)),
    t("noise_sigma12", "noise", Kind::Noise(12.0)),
    t("vignette", "vignette", Kind::Vignette),
    t("watermark_logo", "watermark", Kind::Watermark),
    t("text_overlay", "text_overlay", Kind::TextOverlay),
    t(
        "crop_5_centre",
        "crop_5",
        Kind::Crop {
            keep: 0.95,
            centred: true,
        },
    ),
    t(
        "crop_5_offcentre",
        "crop_5",
        Kind::Crop {
            keep: 0.95,
            centred: false,
        },
    ),
    t(
        "crop_10_centre",
        "crop_10",
        Kind::Crop {
            keep: 0.90,
            centred: true,
        },
    ),
    t(
        "crop_10_offcentre",
        "crop_10",
        Kind::Crop {
            keep: 0.90,
            centred: false,
        },
    ),
    t(
        "crop_20_centre",
        "crop_20",
        Kind::Crop {
            keep: 0.80,
            centred: true,
        },
    ),
    t(
        "crop_20_offcentre",
        "crop_20",
        Kind::Crop {
            keep: 0.80,
            centred: false,
        },
    ),
    t("border_20pct", "border", Kind::Border(0.2)),
    t("mirror", "mirror", Kind::Mirror),
    t("rotate_90", "rotate_90", Kind::Rotate90),
    t("rotate_4deg", "rotate_4", Kind::Rotate(4.0)),
    t("saturation_up", "saturation_contrast", Kind::Saturation(1.6)),
    t("contrast_up", "saturation_contrast", Kind::Contrast(1.5)),
    t("screenshot_frame", "screenshot", Kind::Screenshot),
    t("collage_2x2", "collage", Kind::Collage),
];

/// Evasions used only inside combined chains (see [`super::chains`]).
pub const CHAIN_ONLY: &[Transform] = &[t("jpeg_q60", "jpeg", Kind::Jpeg(60))];

/// The evasion of that name, from [`ALL`] or [`CHAIN_ONLY`].
pub fn by_name(name: &str) -> Option<&'static Transform> {
    ALL.iter().chain(CHAIN_ONLY).find(|t| t.name == name)
}

impl Transform {
    /// Whether [`Transform::apply`] uses the other photos (collage partners).
    pub fn needs_others(&self) -> bool {
        matches!(self.kind, Kind::Collage)
    }

    /// The evasion of `img`. `seed` varies colours and placements per photo; `others` are the
    /// three collage partners (ignored by every other transform).
    pub fn apply(&self, img: &RgbImage, seed: u64, others: &[&RgbImage]) -> RgbImage {
        let (w, h) = img.dimensions();
        match self.kind {
            Kind::Jpeg(q) => jpeg_round_trip(img, q),
            Kind::ResizeFactor(f) => resize(img, scaled(w, f), scaled(h, f)),
            Kind::ResizeWidth(nw) => resize(img, nw, scaled(h, nw as f32 / w as f32)),
            Kind::Blur(sigma) => imageops::blur(img, sigma),
            Kind::Gamma(g) => map_channels(img, |v| 255.0 * (v / 255.0).powf(1.0 / g)),
            Kind::Noise(sigma) => noise(img, sigma, seed),
            Kind::Vignette => vignette(img),
            Kind::Watermark => watermark(img, seed),
            Kind::TextOverlay => text_overlay(img),
            Kind::Crop { keep, centred } => crop(img, keep, centred),
            Kind::Border(f) => border(img, f, seed),
            Kind::Mirror => imageops::flip_horizontal(img),
            Kind::Rotate90 => imageops::rotate90(img),
            Kind::Rotate(deg) => rotate(img, deg),
            Kind::Saturation(f) => saturate(img, f),
            Kind::Contrast(f) => map_channels(img, |v| (v - 128.0) * f + 128.0),
            Kind::Screenshot => screenshot(img, seed),
            Kind::Collage => collage(img, others, seed),
        }
    }
}

/// Deterministic SplitMix64: the evaluation must not depend on a random-number crate's
/// algorithm choices between versions.
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Uniform in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

fn scaled(v: u32, f: f32) -> u32 {
    ((v as f32 * f).round() as u32).max(1)
}

fn resize(img: &RgbImage, w: u32, h: u32) -> RgbImage {
    imageops::resize(img, w.max(1), h.max(1), FilterType::Triangle)
}

fn clamp(v: f32) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

fn map_channels(img: &RgbImage, f: impl Fn(f32) -> f32) -> RgbImage {
    let lut: Vec<u8> = (0..=255).map(|v| clamp(f(v as f32))).collect();
    let mut out = img.clone();
    out.pixels_mut()
        .for_each(|p| p.0.iter_mut().for_each(|c| *c = lut[*c as usize]));
    out
}

/// Encodes at JPEG `quality` and decodes with the daemon's own decoder.
fn jpeg_round_trip(img: &RgbImage, quality: u8) -> RgbImage {
    let mut bytes = Vec::new();
    let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality);
    if img.write_with_encoder(enc).is_err() {
        return img.clone();
    }
    decode(&bytes, DecodeLimits::default()).map_or_else(|_| img.clone(), |d| d.to_rgb8())
}

fn noise(img: &RgbImage, sigma: f32, seed: u64) -> RgbImage {
    let mut rng = SplitMix(seed ^ 0x006e_6f69_7365);
    let mut out = img.clone();
    for c in out.iter_mut() {
        // Sum of four uniforms: close enough to Gaussian for an evasion, and cheap.
        let g = (rng.unit() + rng.unit() + rng.unit() + rng.unit() - 2.0) * 1.732;
        *c = clamp(*c as f32 + g * sigma);
    }
    out
}

fn vignette(img: &RgbImage) -> RgbImage {
    let (w, h) = img.dimensions();
    let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.0);
    let r2max = cx * cx + cy * cy;
    let mut out = img.clone();
    for (x, y, p) in out.enumerate_pixels_mut() {
        let (dx, dy) = (x as f32 - cx, y as f32 - cy);
        let f = 1.0 - 0.6 * (dx * dx + dy * dy) / r2max;
        p.0.iter_mut().for_each(|c| *c = clamp(*c as f32 * f));
    }
    out
}

/// Alpha-blends `colour` over the pixel at (x, y) when it is inside the image.
fn blend(img: &mut RgbImage, x: i64, y: i64, colour: [u8; 3], alpha: f32) {
    if x < 0 || y < 0 || x >= i64::from(img.width()) || y >= i64::from(img.height()) {
        return;
    }
    let p = img.get_pixel_mut(x as u32, y as u32);
    for (c, v) in p.0.iter_mut().zip(colour) {
        *c = clamp(*c as f32 * (1.0 - alpha) + v as f32 * alpha);
    }
}

pub(super) fn fill_rect(img: &mut RgbImage, x0: i64, y0: i64, w: i64, h: i64, colour: [u8; 3], alpha: f32) {
    for y in y0..y0 + h {
        for x in x0..x0 + w {
            blend(img, x, y, colour, alpha);
        }
    }
}

/// A shop logo (a ring with the shop's initials) at 45% opacity, a third of the photo wide,
/// in the lower right where sellers put them.
fn watermark(img: &RgbImage, seed: u64) -> RgbImage {
    let (w, h) = img.dimensions();
    let mut out = img.clone();
    let size = (w.min(h) as f32 * 0.4) as i64;
    let (cx, cy) = (i64::from(w) - size * 6 / 10, i64::from(h) - size * 6 / 10);
    let (r_out, r_in) = (size / 2, size / 2 - size / 10);
    let colour = if seed.is_multiple_of(2) {
        [255, 255, 255]
    } else {
        [20, 20, 20]
    };
    for y in cy - r_out..=cy + r_out {
        for x in cx - r_out..=cx + r_out {
            let d2 = (x - cx).pow(2) + (y - cy).pow(2);
            if d2 <= r_out * r_out && d2 >= r_in * r_in {
                blend(&mut out, x, y, colour, 0.45);
            }
        }
    }
    let scale = (size / 14).max(1);
    let text_w = font::text_width("RJ", scale);
    font::draw(&mut out, "RJ", cx - text_w / 2, cy - 3 * scale, scale, colour, 0.45);
    out
}

/// The shop's name in bold white letters with a dark shadow across the lower part, 80% of
/// the photo wide.
fn text_overlay(img: &RgbImage) -> RgbImage {
    let (w, h) = img.dimensions();
    let mut out = img.clone();
    let text = "TOKO JAYA SHOP";
    let scale = ((w as f32 * 0.8) as i64 / font::text_width(text, 1)).max(1);
    let tw = font::text_width(text, scale);
    let (x, y) = ((i64::from(w) - tw) / 2, i64::from(h) * 7 / 10);
    font::draw(&mut out, text, x + scale / 2, y + scale / 2, scale, [0, 0, 0], 0.8);
    font::draw(&mut out, text, x, y, scale, [255, 255, 255], 1.0);
    out
}

/// Keeps `keep` of each side; off-centre crops take a quarter of the cut from the left/bottom
/// and three quarters from the right/top, so no crop lines up with a centred one.
fn crop(img: &RgbImage, keep: f32, centred: bool) -> RgbImage {
    let (w, h) = img.dimensions();
    let (cw, ch) = (scaled(w, keep), scaled(h, keep));
    let (x, y) = if centred {
        ((w - cw) / 2, (h - ch) / 2)
    } else {
        ((w - cw) / 4, (h - ch) * 3 / 4)
    };
    imageops::crop_imm(img, x, y, cw, ch).to_image()
}

const FRAME_COLOURS: [[u8; 3]; 4] = [[255, 255, 255], [0, 0, 0], [200, 30, 40], [240, 220, 180]];

/// A solid frame adding `f` of each dimension (half on each side).
fn border(img: &RgbImage, f: f32, seed: u64) -> RgbImage {
    let (w, h) = img.dimensions();
    let (bx, by) = (scaled(w, f / 2.0), scaled(h, f / 2.0));
    let colour = FRAME_COLOURS[(seed % 4) as usize];
    let mut out = RgbImage::from_pixel(w + 2 * bx, h + 2 * by, Rgb(colour));
    imageops::replace(&mut out, img, i64::from(bx), i64::from(by));
    out
}

/// Rotates by `deg` about the centre with bilinear sampling, keeping the canvas and filling
/// the uncovered corners white, as phone editors do.
fn rotate(img: &RgbImage, deg: f32) -> RgbImage {
    let (w, h) = img.dimensions();
    let (s, c) = deg.to_radians().sin_cos();
    let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.0);
    RgbImage::from_fn(w, h, |x, y| {
        let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
        let (sx, sy) = (c * dx + s * dy + cx - 0.5, -s * dx + c * dy + cy - 0.5);
        if sx < 0.0 || sy < 0.0 || sx > (w - 1) as f32 || sy > (h - 1) as f32 {
            return Rgb([255, 255, 255]);
        }
        let (x0, y0) = (sx.floor() as u32, sy.floor() as u32);
        let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
        let (fx, fy) = (sx - x0 as f32, sy - y0 as f32);
        let px = |x, y| img.get_pixel(x, y).0;
        let (a, b, c2, d) = (px(x0, y0), px(x1, y0), px(x0, y1), px(x1, y1));
        Rgb(std::array::from_fn(|i| {
            let top = a[i] as f32 * (1.0 - fx) + b[i] as f32 * fx;
            let bottom = c2[i] as f32 * (1.0 - fx) + d[i] as f32 * fx;
            clamp(top * (1.0 - fy) + bottom * fy)
        }))
    })
}

fn saturate(img: &RgbImage, f: f32) -> RgbImage {
    let mut out = img.clone();
    for p in out.pixels_mut() {
        let [r, g, b] = p.0.map(f32::from);
        let l = 0.299 * r + 0.587 * g + 0.114 * b;
        p.0 = [r, g, b].map(|v| clamp(l + (v - l) * f));
    }
    out
}

/// The photo as a marketplace app shows it on a phone: status bar with the time and icons,
/// an app bar, the photo full width, price and text lines, buy buttons and the navigation bar.
fn screenshot(img: &RgbImage, seed: u64) -> RgbImage {
    let width = 720u32;
    let photo_h = scaled(img.height(), width as f32 / img.width() as f32);
    let (status, app_bar, below) = (48u32, 112u32, 420u32);
    let height = status + app_bar + photo_h + below;
    let accent = [[238, 77, 45], [3, 172, 14], [0, 120, 215]][(seed % 3) as usize];
    let mut out = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    let h = |v: u32| i64::from(v);
    fill_rect(&mut out, 0, 0, h(width), h(status), [30, 30, 30], 1.0);
    font::draw(&mut out, "12:45", 24, 14, 3, [255, 255, 255], 1.0);
    for i in 0..3 {
        fill_rect(&mut out, 600 + i * 34, 14, 22, 20, [255, 255, 255], 1.0);
    }
    fill_rect(&mut out, 0, h(status), h(width), h(app_bar), accent, 1.0);
    font::draw(&mut out, "< CARI PRODUK", 28, h(status) + 40, 4, [255, 255, 255], 1.0);
    let photo = resize(img, width, photo_h);
    imageops::replace(&mut out, &photo, 0, h(status + app_bar));
    let mut y = h(status + app_bar + photo_h) + 24;
    font::draw(&mut out, "RP 149.000", 28, y, 5, accent, 1.0);
    y += 60;
    for line in ["TERJUAL 1,2RB  4.9", "GRATIS ONGKIR", "DIKIRIM DARI JAKARTA"] {
        font::draw(&mut out, line, 28, y, 3, [90, 90, 90], 1.0);
        y += 40;
    }
    let buttons = h(height) - 180;
    fill_rect(&mut out, 0, buttons, 360, 100, [255, 240, 235], 1.0);
    font::draw(&mut out, "CHAT", 130, buttons + 36, 4, accent, 1.0);
    fill_rect(&mut out, 360, buttons, 360, 100, accent, 1.0);
    font::draw(&mut out, "BELI", 490, buttons + 36, 4, [255, 255, 255], 1.0);
    fill_rect(&mut out, 0, h(height) - 80, h(width), 80, [10, 10, 10], 1.0);
    for (i, x) in [180i64, 360, 540].iter().enumerate() {
        fill_rect(
            &mut out,
            x - 14,
            h(height) - 54,
            28,
            28,
            [200, 200, 200],
            0.6 + 0.1 * i as f32,
        );
    }
    out
}

/// A 2x2 collage (as sellers post "more colours"): the photo and three others, each squeezed
/// into a square cell, with a white gutter; the photo's cell depends on the seed.
fn collage(img: &RgbImage, others: &[&RgbImage], seed: u64) -> RgbImage {
    let (cell, gutter) = (400u32, 8u32);
    let side = 2 * cell + 3 * gutter;
    let mut out = RgbImage::from_pixel(side, side, Rgb([255, 255, 255]));
    let slot = (seed % 4) as usize;
    let mut rest = others.iter();
    for i in 0..4 {
        let src = if i == slot { Some(img) } else { rest.next().copied() };
        let Some(src) = src else { continue };
        let tile = resize(src, cell, cell);
        let (cx, cy) = (i as u32 % 2, i as u32 / 2);
        let at = |c: u32| i64::from(gutter + c * (cell + gutter));
        imageops::replace(&mut out, &tile, at(cx), at(cy));
    }
    out
}

/// Wraps an RGB image for the fingerprinting API.
pub fn dynamic(img: RgbImage) -> DynamicImage {
    DynamicImage::ImageRgb8(img)
}
