//! Sub-regions of a photo that get their own PDQ hash besides the whole photo.
//!
//! A global hash does not survive a crop, a frame, a screenshot or a collage: the photo it
//! describes is no longer the whole picture. So relist also hashes parts of pictures, and a
//! match between any part of a checked photo and any part of a stored one is evidence:
//! - [`trim`]: the picture without uniform margins (frames, letterboxing, white background
//!   around a product). Done on both sides, so a framed re-upload meets its original.
//! - [`Layout`]: the blocks of a picture separated by uniform bands (the photo inside a
//!   phone screenshot between status bar, app bar and buttons; the tiles of a collage).
//! - [`crops`] (stored side): crops of the trimmed takedown photo, so a cropped re-upload
//!   meets the crop of the original it is closest to.
//! - [`quadrants`] (checked side): quarters and halves of the trimmed picture, for collages
//!   without gutters.
//!
//! The rules are pure functions of the pixels; their output is stored (region hashes of
//! takedowns), so a change of rule is a change of stored output: bump
//! [`REGIONS_VERSION`].
use image::RgbImage;

/// Version of the region rules; stored region hashes were made by this version.
///
/// - 2: regions say whether they are only a part of the picture ([`Region::part`]); the
///   hashes are unchanged.
pub const REGIONS_VERSION: u8 = 2;

/// A rectangle of pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl Rect {
    /// Where this rect lies in a `w` x `h` picture, as stored (fractions in 1/65535ths).
    pub fn stored(self, w: u32, h: u32) -> crate::domain::RegionRect {
        let f =
            |v: u32, len: u32| ((u64::from(v) * 65535 + u64::from(len) / 2) / u64::from(len.max(1))).min(65535) as u16;
        crate::domain::RegionRect([f(self.x, w), f(self.y, h), f(self.x + self.w, w), f(self.y + self.h, h)])
    }

    /// The whole of `img`.
    pub fn of(img: &RgbImage) -> Rect {
        Rect {
            x: 0,
            y: 0,
            w: img.width(),
            h: img.height(),
        }
    }

    fn area(&self) -> u64 {
        u64::from(self.w) * u64::from(self.h)
    }

    /// The part of this rect from fractions `fx0..fx1` of its width and `fy0..fy1` of its
    /// height.
    fn part(&self, fx0: f32, fy0: f32, fx1: f32, fy1: f32) -> Rect {
        let at = |len: u32, f: f32| ((len as f32 * f).round() as u32).min(len);
        let (x0, x1) = (at(self.w, fx0), at(self.w, fx1));
        let (y0, y1) = (at(self.h, fy0), at(self.h, fy1));
        Rect {
            x: self.x + x0,
            y: self.y + y0,
            w: x1.saturating_sub(x0),
            h: y1.saturating_sub(y0),
        }
    }
}

/// Per-channel difference under which two pixels count as the same colour (JPEG noise,
/// gradients in a flat frame).
const TOLERANCE: i32 = 20;
/// Share of a line's pixels that must have the line's dominant colour for it to be uniform.
/// Under 1 so that a thin line of text on a status bar or button still counts as uniform.
const UNIFORM_SHARE: f32 = 0.92;
/// Regions smaller than this share of a side are too small to hash (PDQ needs detail).
const MIN_SIDE_SHARE: f32 = 0.2;
/// Blocks under this share of the picture's area are parts of it (see [`Region::part`]):
/// quarters are, halves are not.
const PART_SHARE: f64 = 0.4;
/// Most segments kept per picture, largest first.
const MAX_SEGMENTS: usize = 6;

/// Whether the `n` pixels yielded by `pixels` are mostly one colour.
fn uniform(pixels: impl Iterator<Item = [u8; 3]> + Clone, n: u32) -> bool {
    if n == 0 {
        return true;
    }
    // The dominant colour is taken as the per-channel median of a sample (at most 127
    // pixels: the step is n / 64), found by counting: a coarse count per 16 values, then the
    // exact count within the bucket the median falls in.
    let step = (n / 64).max(1) as usize;
    let mut fine = [[0u8; 256]; 3];
    let mut coarse = [[0u8; 16]; 3];
    let mut len = 0usize;
    for p in pixels.clone().step_by(step) {
        for (c, v) in p.into_iter().enumerate() {
            fine[c][usize::from(v)] += 1;
            coarse[c][usize::from(v >> 4)] += 1;
        }
        len += 1;
    }
    let mut mid = [0u8; 3];
    for ((m, fine), coarse) in mid.iter_mut().zip(&fine).zip(&coarse) {
        // The (len / 2)-th smallest value (0-based), as sorting would give.
        let (bucket, rest) = locate(coarse, len / 2);
        *m = (bucket * 16 + locate(&fine[bucket * 16..], rest).0) as u8;
    }
    // Stops as soon as too many pixels differ for the rest to make up the share.
    let need = UNIFORM_SHARE * n as f32;
    let (mut close, mut seen) = (0u32, 0u32);
    for p in pixels {
        seen += 1;
        if p.iter()
            .zip(mid)
            .all(|(a, b)| (i32::from(*a) - i32::from(b)).abs() <= TOLERANCE)
        {
            close += 1;
        } else if ((close + n.saturating_sub(seen)) as f32) < need {
            return false;
        }
    }
    close as f32 >= need
}

/// The index of the count that the `rank`-th counted item (0-based) falls in, and its rank
/// within that count.
fn locate(counts: &[u8], mut rank: usize) -> (usize, usize) {
    let mut i = 0;
    while rank >= usize::from(counts[i]) {
        rank -= usize::from(counts[i]);
        i += 1;
    }
    (i, rank)
}

/// Whether line `i` of `r` (its `i`-th row when `rows`, else its `i`-th column) is uniform.
fn line_uniform(img: &RgbImage, r: Rect, rows: bool, i: u32) -> bool {
    if rows {
        row_uniform(img, r, r.y + i)
    } else {
        col_uniform(img, r, r.x + i)
    }
}

fn row_uniform(img: &RgbImage, r: Rect, y: u32) -> bool {
    let start = (y as usize * img.width() as usize + r.x as usize) * 3;
    let row = &img.as_raw()[start..start + r.w as usize * 3];
    uniform(row.chunks_exact(3).map(|p| [p[0], p[1], p[2]]), r.w)
}

fn col_uniform(img: &RgbImage, r: Rect, x: u32) -> bool {
    if r.h == 0 {
        return true;
    }
    let stride = img.width() as usize * 3;
    let start = r.y as usize * stride + x as usize * 3;
    let raw = &img.as_raw()[start..];
    uniform(
        raw.chunks(3)
            .step_by(img.width() as usize)
            .take(r.h as usize)
            .map(|p| [p[0], p[1], p[2]]),
        r.h,
    )
}

/// `r` without its uniform margins: rows from the top and bottom, then columns from the left
/// and right, while they are uniform. Returns `r` itself when nothing is uniform, and an
/// empty rect when everything is.
pub fn trim(img: &RgbImage, r: Rect) -> Rect {
    let (mut top, mut bottom) = (r.y, r.y + r.h);
    while top < bottom && row_uniform(img, r, top) {
        top += 1;
    }
    while bottom > top && row_uniform(img, r, bottom - 1) {
        bottom -= 1;
    }
    let rows = Rect {
        y: top,
        h: bottom - top,
        ..r
    };
    let (mut left, mut right) = (r.x, r.x + r.w);
    while left < right && col_uniform(img, rows, left) {
        left += 1;
    }
    while right > left && col_uniform(img, rows, right - 1) {
        right -= 1;
    }
    Rect {
        x: left,
        w: right - left,
        ..rows
    }
}

/// Splits `r` along runs of uniform lines (rows when `rows`, else columns) at least `min_gap`
/// long; returns the blocks between them.
///
/// Only runs that change the split are looked for, and testing a line is most of the rules'
/// cost: a run of at least `min_gap` lines holds a line whose index is a multiple of
/// `min_gap`, so those lines are tested, and from each uniform one the run is followed both
/// ways; runs at the edges count whatever their length, so they are followed from each edge.
/// Lines never tested lie in no run that counts, so the blocks are those of testing every
/// line (tested against it).
fn split(img: &RgbImage, r: Rect, rows: bool) -> Vec<Rect> {
    let len = if rows { r.h } else { r.w };
    let min_gap = (len / 100).max(2);
    let mut known: Vec<Option<bool>> = vec![None; len as usize];
    // Follows the run of uniform lines from line `from` (itself included) in direction `step`,
    // testing each line at most once; returns how many lines it went through.
    let mut follow = |from: u32, step: i64| {
        let mut i = i64::from(from);
        while i >= 0
            && i < i64::from(len)
            && *known[i as usize].get_or_insert_with(|| line_uniform(img, r, rows, i as u32))
        {
            i += step;
        }
        i.abs_diff(i64::from(from))
    };
    if len > 0 {
        follow(0, 1);
        follow(len - 1, -1);
    }
    for probe in (0..len).step_by(min_gap as usize) {
        if follow(probe, -1) > 0 {
            follow(probe + 1, 1);
        }
    }
    let flat: Vec<bool> = known.iter().map(|k| *k == Some(true)).collect();
    blocks(&flat, min_gap)
        .into_iter()
        .map(|(a, b)| {
            if rows {
                Rect {
                    y: r.y + a,
                    h: b - a,
                    ..r
                }
            } else {
                Rect {
                    x: r.x + a,
                    w: b - a,
                    ..r
                }
            }
        })
        .collect()
}

/// The blocks (start, end) between runs of `flat` lines that are at least `min_gap` long or
/// touch an edge.
fn blocks(flat: &[bool], min_gap: u32) -> Vec<(u32, u32)> {
    let len = flat.len() as u32;
    let mut out = Vec::new();
    let (mut start, mut i) = (0u32, 0u32);
    while i < len {
        if flat[i as usize] {
            let gap_start = i;
            while i < len && flat[i as usize] {
                i += 1;
            }
            if i - gap_start >= min_gap || gap_start == 0 || i == len {
                if gap_start > start {
                    out.push((start, gap_start));
                }
                start = i;
            }
        } else {
            i += 1;
        }
    }
    if start < len {
        out.push((start, len));
    }
    out
}

/// What the rules find in a picture, worked out once and shared by the region hashes and the
/// local features (finding uniform lines is most of the rules' cost).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The whole picture.
    pub whole: Rect,
    /// The picture without its uniform margins (see [`trim`]).
    pub trimmed: Rect,
    /// Blocks separated by uniform bands, largest first (see [`Layout::of`]).
    pub segments: Vec<Rect>,
}

impl Layout {
    /// Trims the picture, then splits it along uniform bands: rows first, then columns within
    /// each band, each block trimmed. Only blocks of a useful size that differ from the
    /// trimmed whole are segments.
    pub fn of(img: &RgbImage) -> Layout {
        let whole = Rect::of(img);
        let trimmed = trim(img, whole);
        let min_w = (whole.w as f32 * MIN_SIDE_SHARE) as u32;
        let min_h = (whole.h as f32 * MIN_SIDE_SHARE) as u32;
        let mut segments: Vec<Rect> = Vec::new();
        for band in split(img, trimmed, true) {
            if band.h < min_h {
                continue;
            }
            for block in split(img, band, false) {
                let block = trim(img, block);
                if block.w >= min_w.max(8) && block.h >= min_h.max(8) && block != trimmed && !segments.contains(&block)
                {
                    segments.push(block);
                }
            }
        }
        segments.sort_by_key(|r| std::cmp::Reverse(r.area()));
        segments.truncate(MAX_SEGMENTS);
        Layout {
            whole,
            trimmed,
            segments,
        }
    }
}

/// Crops of a stored photo (fractions of the trimmed photo kept: left, top, right, bottom).
/// A re-upload cropped by up to about a fifth lands near one of them.
const CROPS: &[(f32, f32, f32, f32)] = &[
    // Centred, 90% and 80% of each side.
    (0.05, 0.05, 0.95, 0.95),
    (0.10, 0.10, 0.90, 0.90),
    // Off-centre 90%: the cut taken from one corner.
    (0.0, 0.0, 0.90, 0.90),
    (0.10, 0.0, 1.0, 0.90),
    (0.0, 0.10, 0.90, 1.0),
    (0.10, 0.10, 1.0, 1.0),
    // Off-centre 80%.
    (0.0, 0.0, 0.80, 0.80),
    (0.20, 0.0, 1.0, 0.80),
    (0.0, 0.20, 0.80, 1.0),
    (0.20, 0.20, 1.0, 1.0),
];

/// The crops of `r` stored for a takedown photo.
pub fn crops(r: Rect) -> Vec<Rect> {
    CROPS.iter().map(|&(a, b, c, d)| r.part(a, b, c, d)).collect()
}

/// Quarters and halves of `r`, for collages whose tiles touch.
pub fn quadrants(r: Rect) -> Vec<Rect> {
    vec![
        r.part(0.0, 0.0, 0.5, 0.5),
        r.part(0.5, 0.0, 1.0, 0.5),
        r.part(0.0, 0.5, 0.5, 1.0),
        r.part(0.5, 0.5, 1.0, 1.0),
        r.part(0.0, 0.0, 0.5, 1.0),
        r.part(0.5, 0.0, 1.0, 1.0),
        r.part(0.0, 0.0, 1.0, 0.5),
        r.part(0.0, 0.5, 1.0, 1.0),
    ]
}

/// Why a set of regions is hashed: a stored photo and a checked photo get different ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// A takedown photo: trimmed, segments, crops of the trimmed photo.
    Stored,
    /// A checked photo: trimmed, segments, quadrants and halves of the trimmed photo.
    Checked,
}

/// One hashed region, and whether it is only a part of the picture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub rect: Rect,
    /// A block (segment, quarter) covering under [`PART_SHARE`] of the picture. Two pictures
    /// can share such a block without being one photo (a seller's logo and name cut out as a
    /// block of its own on every listing), so a match between parts of both is weaker
    /// evidence.
    pub part: bool,
}

/// The regions hashed besides the whole picture, without duplicates or the whole picture
/// itself; tiny regions are left out.
pub fn regions(layout: &Layout, side: Side) -> Vec<Region> {
    let (whole, trimmed) = (layout.whole, layout.trimmed);
    let mut out: Vec<Region> = Vec::new();
    let mut push = |rect: Rect, block: bool| {
        if rect.w >= 16 && rect.h >= 16 && rect != whole && !out.iter().any(|r| r.rect == rect) {
            out.push(Region {
                rect,
                part: block && (rect.area() as f64) < PART_SHARE * whole.area() as f64,
            });
        }
    };
    push(trimmed, false);
    layout.segments.iter().for_each(|&r| push(r, true));
    let base = if trimmed.w >= 16 && trimmed.h >= 16 {
        trimmed
    } else {
        whole
    };
    match side {
        Side::Stored => crops(base).into_iter().for_each(|r| push(r, false)),
        Side::Checked => quadrants(base).into_iter().for_each(|r| push(r, true)),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn textured(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            Rgb([(x * 13 % 251) as u8, (y * 7 % 253) as u8, ((x ^ y) % 255) as u8])
        })
    }

    #[test]
    fn trim_removes_a_solid_frame_exactly() {
        let inner = textured(60, 40);
        let mut framed = RgbImage::from_pixel(100, 70, Rgb([250, 250, 250]));
        image::imageops::replace(&mut framed, &inner, 17, 11);
        assert_eq!(
            trim(&framed, Rect::of(&framed)),
            Rect {
                x: 17,
                y: 11,
                w: 60,
                h: 40
            }
        );
        assert_eq!(trim(&inner, Rect::of(&inner)), Rect::of(&inner));
    }

    #[test]
    fn segments_find_the_tiles_of_a_collage_with_gutters() {
        let mut c = RgbImage::from_pixel(210, 210, Rgb([255, 255, 255]));
        for (x, y) in [(5, 5), (108, 5), (5, 108), (108, 108)] {
            image::imageops::replace(&mut c, &textured(97, 97), x, y);
        }
        let s = Layout::of(&c).segments;
        assert_eq!(s.len(), 4, "{s:?}");
        assert!(s.iter().all(|r| r.w == 97 && r.h == 97), "{s:?}");
    }

    /// `split` tests a few lines; testing every line gives the same blocks.
    #[test]
    fn split_equals_testing_every_line() {
        let mut pictures = vec![textured(300, 200)];
        // Bands and gutters of many widths, at the edges and inside, on both axes.
        for (k, gap) in [1u32, 2, 3, 5, 8, 13].into_iter().enumerate() {
            let mut c = RgbImage::from_pixel(301 + k as u32 * 7, 203, Rgb([250, 250, 250]));
            let mut x = k as u32;
            while x + 40 < c.width() {
                let h = 60 + (x % 3) * 40;
                image::imageops::replace(&mut c, &textured(37, h), i64::from(x), i64::from(gap * 3 % 11));
                x += 37 + gap + (x % 4);
            }
            pictures.push(c);
            let mut t = RgbImage::from_pixel(240, 320 + gap, Rgb([30, 30, 30]));
            image::imageops::replace(&mut t, &textured(240, 100), 0, i64::from(gap) * 4);
            image::imageops::replace(&mut t, &textured(200, 90), 20, 110 + i64::from(gap) * 6);
            pictures.push(t);
        }
        let mut split_ones = 0;
        for img in &pictures {
            let r = Rect::of(img);
            for rows in [true, false] {
                let len = if rows { r.h } else { r.w };
                let every: Vec<bool> = (0..len).map(|i| line_uniform(img, r, rows, i)).collect();
                let want: Vec<(u32, u32)> = blocks(&every, (len / 100).max(2));
                let got: Vec<(u32, u32)> = split(img, r, rows)
                    .iter()
                    .map(|b| if rows { (b.y, b.y + b.h) } else { (b.x, b.x + b.w) })
                    .collect();
                assert_eq!(got, want, "{}x{} rows {rows}", img.width(), img.height());
                split_ones += usize::from(want.len() > 1);
            }
        }
        assert!(split_ones >= 10, "only {split_ones} pictures split");
    }

    #[test]
    fn stored_and_checked_regions_differ_and_skip_the_whole() {
        let img = textured(120, 90);
        let layout = Layout::of(&img);
        let stored = regions(&layout, Side::Stored);
        let checked = regions(&layout, Side::Checked);
        let whole = Rect::of(&img);
        assert!(stored.iter().chain(&checked).all(|r| r.rect != whole));
        assert_eq!(stored.len(), CROPS.len());
        assert_eq!(checked.len(), 8);
        // Crops are most of the photo; quarters are parts, halves are not.
        assert!(stored.iter().all(|r| !r.part));
        assert_eq!(checked.iter().filter(|r| r.part).count(), 4);
    }
}
