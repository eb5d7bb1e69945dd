//! Appearance: a 32x32 colour picture of an image (luma at 32x32, chroma at 16x16, as JPEG
//! keeps it), remembered so that a match found by a global hash can be checked pixel by
//! pixel before it blocks anyone, and the detail the picture really carries.
//!
//! Why: every hash relist matches on (PDQ, pHash, local features) is computed from grey
//! levels, and distinct products shot the same way on white (one tie in red and in blue,
//! one wallet in black and in brown, one lipstick in two shades) are within PDQ's match
//! radius of each other. The appearance is a second, independent look at the pair: after
//! undoing what re-uploaders do to a whole photo (gamma, contrast, brightness, saturation,
//! a vignette), the colours of a re-upload agree cell by cell, and a colour variant's do
//! not. See [`compare`] and the README's detection section for the measured margins.
//!
//! Everything stored here is computed with f32 arithmetic in a fixed order (no fused
//! multiply-add on the targets relist builds for) and pinned by golden values: a change of
//! output is a change of stored format and bumps [`APPEARANCE_VERSION`].
use image::RgbImage;

use super::pdq::Dihedral;
use super::regions::Rect;

/// Version of the appearance rules; stored appearances were made by this version.
pub const APPEARANCE_VERSION: u8 = 1;
pub use crate::hashes::{Appearance, APPEARANCE_BYTES as BYTES, APPEARANCE_SIDE as SIDE};
/// Chroma cells per side (each covers 2x2 luma cells).
pub const CHROMA_SIDE: usize = SIDE / 2;
/// Cells per side of the fine grid regions are cut from.
const FINE: usize = 4 * SIDE;

/// An image's colours averaged over a grid of cells, RGB in 0..=255.
#[derive(Clone, Debug, PartialEq)]
pub struct Grid {
    pub w: usize,
    pub h: usize,
    pub rgb: Vec<[f32; 3]>,
}

impl Grid {
    fn at(&self, x: usize, y: usize) -> [f32; 3] {
        self.rgb[y * self.w + x]
    }

    /// The mean colour of the cells from `x0..x1` x `y0..y1` (fractions of the grid) averaged
    /// into `w` x `h` new cells: exact area weights, so a region's cells are the mean of the
    /// picture over them.
    pub fn resample(&self, x0: f32, y0: f32, x1: f32, y1: f32, w: usize, h: usize) -> Grid {
        let tx = taps(self.w, x0 * self.w as f32, x1 * self.w as f32, w);
        let ty = taps(self.h, y0 * self.h as f32, y1 * self.h as f32, h);
        let mut rgb = vec![[0f32; 3]; w * h];
        for (oy, wy) in ty.iter().enumerate() {
            for (ox, wx) in tx.iter().enumerate() {
                let mut acc = [0f32; 3];
                for &(y, fy) in wy {
                    for &(x, fx) in wx {
                        let c = self.at(x, y);
                        let f = fx * fy;
                        for k in 0..3 {
                            acc[k] += c[k] * f;
                        }
                    }
                }
                rgb[oy * w + ox] = acc;
            }
        }
        Grid { w, h, rgb }
    }

    /// This grid seen through a rotation/flip (the PDQ transform a match was found under).
    pub fn dihedral(&self, t: Dihedral) -> Grid {
        let (w, h) = (self.w, self.h);
        let (nw, nh) = match t {
            Dihedral::Rotate90 | Dihedral::Rotate270 | Dihedral::FlipPlus1 | Dihedral::FlipMinus1 => (h, w),
            _ => (w, h),
        };
        let mut rgb = Vec::with_capacity(w * h);
        for y in 0..nh {
            for x in 0..nw {
                let (sx, sy) = match t {
                    Dihedral::Original => (x, y),
                    Dihedral::Rotate90 => (w - 1 - y, x),
                    Dihedral::Rotate180 => (w - 1 - x, h - 1 - y),
                    Dihedral::Rotate270 => (y, h - 1 - x),
                    Dihedral::FlipX => (x, h - 1 - y),
                    Dihedral::FlipY => (w - 1 - x, y),
                    Dihedral::FlipPlus1 => (y, x),
                    Dihedral::FlipMinus1 => (w - 1 - y, h - 1 - x),
                };
                rgb.push(self.at(sx, sy));
            }
        }
        Grid { w: nw, h: nh, rgb }
    }
}

/// For each of `n` output cells spanning `a..b` of a `len`-cell axis: the source cells and
/// their weights (summing to 1). A span narrower than one source cell takes that cell.
fn taps(len: usize, a: f32, b: f32, n: usize) -> Vec<Vec<(usize, f32)>> {
    let (a, b) = (a.clamp(0.0, len as f32), b.clamp(0.0, len as f32));
    let step = (b - a) / n as f32;
    (0..n)
        .map(|k| {
            let lo = a + step * k as f32;
            let hi = if k + 1 == n { b } else { lo + step };
            let mut out = Vec::new();
            let mut i = (lo.floor() as usize).min(len.saturating_sub(1));
            while (i as f32) < hi && i < len {
                let w = hi.min(i as f32 + 1.0) - lo.max(i as f32);
                if w > 0.0 {
                    out.push((i, w));
                }
                i += 1;
            }
            if out.is_empty() {
                out.push(((lo.floor() as usize).min(len.saturating_sub(1)), 1.0));
            }
            let total: f32 = out.iter().map(|p| p.1).sum();
            out.iter_mut().for_each(|p| p.1 /= total);
            out
        })
        .collect()
}

/// Per source index of an axis of `len` cells averaged into `n`: the output cells it falls
/// in and the share of each (compressed: `starts[i]..starts[i + 1]` indexes `taps`).
struct AxisTaps {
    starts: Vec<usize>,
    taps: Vec<(usize, f32)>,
}

impl AxisTaps {
    fn new(len: usize, n: usize) -> AxisTaps {
        let mut per_source: Vec<Vec<(usize, f32)>> = vec![Vec::new(); len];
        for (out, ws) in taps(len, 0.0, len as f32, n).into_iter().enumerate() {
            for (i, wt) in ws {
                per_source[i].push((out, wt));
            }
        }
        let mut starts = Vec::with_capacity(len + 1);
        let mut flat = Vec::new();
        for t in per_source {
            starts.push(flat.len());
            flat.extend(t);
        }
        starts.push(flat.len());
        AxisTaps { starts, taps: flat }
    }

    fn of(&self, i: usize) -> &[(usize, f32)] {
        &self.taps[self.starts[i]..self.starts[i + 1]]
    }
}

/// The mean colours of `rect` of `img` on a `w` x `h` grid (exact area weights: a pixel
/// split between two cells counts in each by the share that falls in it). One pass over the
/// pixels: each adds itself to the one or two cells of its row's bins, and each row's bins
/// to the one or two rows of cells it falls in.
fn area_grid(img: &RgbImage, rect: Rect, w: usize, h: usize) -> Grid {
    let tx = AxisTaps::new(rect.w as usize, w);
    let ty = AxisTaps::new(rect.h as usize, h);
    let raw = img.as_raw();
    let stride = img.width() as usize * 3;
    let mut rgb = vec![[0f32; 3]; w * h];
    let mut bins = vec![[0f32; 3]; w];
    for y in 0..rect.h as usize {
        bins.iter_mut().for_each(|b| *b = [0.0; 3]);
        let start = (rect.y as usize + y) * stride + rect.x as usize * 3;
        let line = &raw[start..start + rect.w as usize * 3];
        for (x, p) in line.chunks_exact(3).enumerate() {
            let px = [f32::from(p[0]), f32::from(p[1]), f32::from(p[2])];
            for &(out, f) in tx.of(x) {
                let b = &mut bins[out];
                b[0] += px[0] * f;
                b[1] += px[1] * f;
                b[2] += px[2] * f;
            }
        }
        for &(oy, f) in ty.of(y) {
            for (o, b) in rgb[oy * w..(oy + 1) * w].iter_mut().zip(&bins) {
                o[0] += b[0] * f;
                o[1] += b[1] * f;
                o[2] += b[2] * f;
            }
        }
    }
    Grid { w, h, rgb }
}

fn to_u8(v: f32) -> u8 {
    let r = v.clamp(0.0, 255.0) + 0.5;
    r as u8
}

/// Full-range BT.601, as JPEG stores colour.
fn ycc([r, g, b]: [f32; 3]) -> [f32; 3] {
    [
        0.299 * r + 0.587 * g + 0.114 * b,
        128.0 - 0.168_736 * r - 0.331_264 * g + 0.5 * b,
        128.0 + 0.5 * r - 0.418_688 * g - 0.081_312 * b,
    ]
}

fn rgb([y, cb, cr]: [f32; 3]) -> [f32; 3] {
    let (cb, cr) = (cb - 128.0, cr - 128.0);
    [y + 1.402 * cr, y - 0.344_136 * cb - 0.714_136 * cr, y + 1.772 * cb]
}

impl Appearance {
    /// The appearance of a whole picture.
    pub fn of(img: &RgbImage) -> Option<Appearance> {
        Fine::of(img).map(|f| f.appearance(Rect::of(img)))
    }

    /// Decodes [`Appearance::cells`] into a colour grid (chroma cells shared by their 2x2
    /// luma cells).
    pub fn grid(&self) -> Grid {
        let c = &self.cells;
        let (cb, cr) = (&c[SIDE * SIDE..], &c[SIDE * SIDE + CHROMA_SIDE * CHROMA_SIDE..]);
        let rgb = (0..SIDE * SIDE)
            .map(|i| {
                let (x, y) = (i % SIDE, i / SIDE);
                let j = (y / 2) * CHROMA_SIDE + x / 2;
                rgb([f32::from(c[i]), f32::from(cb[j]), f32::from(cr[j])])
            })
            .collect();
        Grid { w: SIDE, h: SIDE, rgb }
    }

    fn encode(grid: &Grid, effective_side: u16) -> Appearance {
        let mut cells = Box::new([0u8; BYTES]);
        for (o, &c) in cells.iter_mut().zip(&grid.rgb) {
            *o = to_u8(ycc(c)[0]);
        }
        let (cb, cr) = cells[SIDE * SIDE..].split_at_mut(CHROMA_SIDE * CHROMA_SIDE);
        for y in 0..CHROMA_SIDE {
            for x in 0..CHROMA_SIDE {
                let mut acc = [0f32; 3];
                for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                    let c = grid.at(2 * x + dx, 2 * y + dy);
                    for k in 0..3 {
                        acc[k] += c[k];
                    }
                }
                let v = ycc(acc.map(|a| a * 0.25));
                cb[y * CHROMA_SIDE + x] = to_u8(v[1]);
                cr[y * CHROMA_SIDE + x] = to_u8(v[2]);
            }
        }
        Appearance { cells, effective_side }
    }
}

/// A picture averaged onto a fine grid (128x128 cells), from which the appearance of the
/// whole picture and of any of its regions are cut without reading the pixels again.
pub struct Fine {
    grid: Grid,
    width: u32,
    height: u32,
    effective_side: u16,
}

impl Fine {
    /// `None` for an empty picture.
    pub fn of(img: &RgbImage) -> Option<Fine> {
        if img.width() == 0 || img.height() == 0 {
            return None;
        }
        Some(Fine {
            grid: area_grid(img, Rect::of(img), FINE, FINE),
            width: img.width(),
            height: img.height(),
            effective_side: effective_side(img),
        })
    }

    /// The appearance of `r` (pixels of the picture); a region's detail is the picture's,
    /// scaled by the share of the shorter side it keeps.
    pub fn appearance(&self, r: Rect) -> Appearance {
        let (w, h) = (self.width as f32, self.height as f32);
        let grid = self.grid.resample(
            r.x as f32 / w,
            r.y as f32 / h,
            (r.x + r.w) as f32 / w,
            (r.y + r.h) as f32 / h,
            SIDE,
            SIDE,
        );
        let share = (r.w as f32 / w).min(r.h as f32 / h).min(1.0);
        Appearance::encode(&grid, (f32::from(self.effective_side) * share).round() as u16)
    }
}

/// Ratio of a band's detail to the next coarser band's under which the finer band has
/// collapsed (see [`effective_side`]).
const DROP: f32 = 0.4;

/// The shorter side, in pixels, at the scale the picture's detail really has.
///
/// A picture scaled up (a catalog thumbnail enlarged 8x by a seller) has as many pixels as
/// a photo but the detail of the thumbnail. In a pyramid of 2x2 means, each level's band
/// energy (the mean variance within its 2x2 blocks) falls gently from coarse to fine in
/// natural pictures, even soft ones (measured: each band 0.3 to 1.5 times the next coarser
/// one; a shallow-focus photo 0.3-0.5); scaling up by 2^k makes band k-1 collapse to about
/// a quarter of band k (0.15-0.26 measured for bicubic 2x, 4x and 8x, 0 for pixel
/// repetition), with the bands under it following. So the picture's detail ends at the
/// coarsest such drop under [`DROP`] (between bands measured over enough blocks). A blurred photo also reads smaller, which is the
/// point: it carries less detail.
pub fn effective_side(img: &RgbImage) -> u16 {
    let energies = band_energies(img);
    let short = img.width().min(img.height()) as usize;
    // Levels collapsed from the finest up: each under DROP of the next coarser one (an
    // upscale collapses every level under its own; a soft photo dips at one level at most).
    let k = (1..energies.len())
        .take_while(|&k| energies[k - 1] < DROP * energies[k])
        .count();
    (short >> k).min(usize::from(u16::MAX)) as u16
}

/// Mean squared luma gradient (to the right and down) at each level of a pyramid of 2x2
/// means, finest first, while the level's short side is at least 16 pixels. Differences
/// of neighbours, not variances within fixed blocks, so that a straight edge (a frame, a
/// collage's gutter) counts alike wherever it falls.
pub fn band_energies(img: &RgbImage) -> Vec<f32> {
    let (mut w, mut h) = (img.width() as usize, img.height() as usize);
    if w.min(h) < 16 {
        return Vec::new();
    }
    // Luma in levels, BT.601 weights in integers (summing to 65536), rounded down.
    let mut level: Vec<f32> = img
        .as_raw()
        .chunks_exact(3)
        .map(|p| ((19_595 * u32::from(p[0]) + 38_470 * u32::from(p[1]) + 7_471 * u32::from(p[2])) >> 16) as f32)
        .collect();
    let mut energies = Vec::new();
    loop {
        let mut energy = 0f64;
        for y in 0..h {
            let row = &level[y * w..(y + 1) * w];
            let mut acc = 0f32;
            for x in 0..w - 1 {
                let d = row[x + 1] - row[x];
                acc += d * d;
            }
            if y + 1 < h {
                for (a, b) in row.iter().zip(&level[(y + 1) * w..(y + 2) * w]) {
                    let d = b - a;
                    acc += d * d;
                }
            }
            energy += f64::from(acc);
        }
        energies.push((energy / (w * h) as f64) as f32);
        let (nw, nh) = (w / 2, h / 2);
        if nw.min(nh) < 16 || energies.len() == 6 {
            break;
        }
        let mut next = vec![0f32; nw * nh];
        for y in 0..nh {
            let (top, bottom) = (&level[2 * y * w..], &level[(2 * y + 1) * w..]);
            for (x, n) in next[y * nw..(y + 1) * nw].iter_mut().enumerate() {
                *n = (top[2 * x] + top[2 * x + 1] + bottom[2 * x] + bottom[2 * x + 1]) * 0.25;
            }
        }
        level = next;
        w = nw;
        h = nh;
    }
    energies
}

/// How well two aligned appearances agree.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Agreement {
    /// RMS colour difference (RGB, 0-255 units) over the informative cells, after the
    /// photometric fit: small for a re-upload, large for another product.
    pub residual: f32,
    /// The same over the best-fitting 90% of the informative cells: an overlay (a logo, a
    /// shop name) covering a tenth of the picture does not count against a re-upload.
    pub residual_90: f32,
    /// Share of cells that carry something (not background in either picture).
    pub informative: f32,
}

/// Cells whose colour is this far (RGB distance) from the background, or whose
/// neighbourhood spans this much luma, carry information.
const INFORMATIVE: f32 = 12.0;
/// Share of a cell's neighbourhood luma span forgiven in its residual (see [`compare`]).
const EDGE_SLACK: f32 = 0.1;
/// Fewer informative cells than this: nothing to compare.
const MIN_INFORMATIVE: usize = 8;
/// Saturation factors tried on the checked picture (a re-upload's saturation edit undone):
/// 0.5 to 2 in steps of a sixth of an octave.
const SATURATIONS: [f32; 13] = [
    0.5, 0.561, 0.63, 0.707, 0.794, 0.891, 1.0, 1.122, 1.26, 1.414, 1.587, 1.782, 2.0,
];
/// Gammas tried (with the offset and gains fitted for each): 0.4 to 2.5, with 1/2 and 2.
const GAMMAS: [f32; 15] = [
    0.4, 0.45, 0.5, 0.57, 0.66, 0.76, 0.87, 1.0, 1.15, 1.32, 1.52, 1.75, 2.0, 2.25, 2.5,
];

/// Compares a checked picture's grid with a stored one's, aligned and of equal size.
///
/// The fit predicts the checked colours from the stored ones with what a re-uploader's
/// photo editor does to a whole picture, and nothing that could turn one product into
/// another: a saturation factor (about the cell's luma), then one tone curve shared by the
/// three channels (offset + gain x value^gamma: brightness, contrast, gamma), times a radial
/// gain (a vignette), clipped as the editor clips. A shared curve cannot turn red into blue,
/// nor beige into brown without moving the other colours too. The curve is fitted on 2x2 means of the
/// cells (the same curve, a quarter of the work), three rounds, each leaving out the cells
/// that fit worst, so an overlay does not bend it. `None` when fewer than
/// [`MIN_INFORMATIVE`] cells carry anything, or the grids differ in size.
pub fn compare(checked: &Grid, stored: &Grid) -> Option<Agreement> {
    if checked.w != stored.w || checked.h != stored.h || checked.rgb.is_empty() {
        return None;
    }
    let n = stored.w * stored.h;
    let mask: Vec<bool> = {
        let (a, b) = (informative(checked), informative(stored));
        a.iter().zip(&b).map(|(x, y)| *x || *y).collect()
    };
    let count = mask.iter().filter(|m| **m).count();
    if count < MIN_INFORMATIVE {
        return None;
    }
    let fine = Samples::of(checked, stored);
    let coarse = if stored.w >= 8 && stored.h >= 8 {
        Samples::of(&halve(checked), &halve(stored))
    } else {
        fine.clone()
    };
    let mut weights = vec![1f32; coarse.len()];
    let mut at = (6usize, 7usize);
    for round in 0..3 {
        // Coarse to fine over (saturation, gamma): a few spread points the first time,
        // then the neighbours of the best twice. Within a round the weights are fixed, so a
        // point's fit is computed once (the neighbourhoods overlap; most of a compare's time).
        let mut best = (f32::INFINITY, at, Fit::default());
        let mut tried = [[false; GAMMAS.len()]; SATURATIONS.len()];
        let mut try_at = |ki: usize, gi: usize, best: &mut (f32, (usize, usize), Fit)| {
            if std::mem::replace(&mut tried[ki][gi], true) {
                return;
            }
            let f = coarse.fit(&weights, SATURATIONS[ki], gi);
            if f.error < best.0 {
                *best = (f.error, (ki, gi), f);
            }
        };
        if round == 0 {
            for ki in [1, 4, 6, 8, 11] {
                for gi in [1, 4, 7, 10, 13] {
                    try_at(ki, gi, &mut best);
                }
            }
        } else {
            try_at(at.0, at.1, &mut best);
        }
        for _ in 0..3 {
            let (ki, gi) = best.1;
            for nk in ki.saturating_sub(1)..(ki + 2).min(SATURATIONS.len()) {
                for ng in gi.saturating_sub(1)..(gi + 2).min(GAMMAS.len()) {
                    try_at(nk, ng, &mut best);
                }
            }
        }
        at = best.1;
        let fit = best.2;
        if round == 2 {
            // A cell across an edge averages pixels a nonlinear edit (gamma, clipping) moved
            // by different amounts, so it cannot fit as well as a flat one: it is allowed
            // EDGE_SLACK of the luma span around it. A recoloured product's flat inside is not.
            let range = luma_range(stored);
            let slack = |res: Vec<f32>| -> Vec<f32> {
                let mut kept: Vec<f32> = res
                    .iter()
                    .zip(&range)
                    .zip(&mask)
                    .filter(|(_, m)| **m)
                    .map(|((r, g), _)| (r - EDGE_SLACK * g).max(0.0))
                    .collect();
                kept.sort_by(f32::total_cmp);
                kept
            };
            let rms = |v: &[f32]| (v.iter().map(|r| r * r).sum::<f32>() / v.len().max(1) as f32).sqrt();
            let strict = slack(fine.residuals(&fit));
            // The overlay-tolerant figure also forgives a shift of under a cell (a region cut
            // a few pixels off the original's frame): each checked cell against the best of
            // the stored cell and its neighbours.
            let tolerant = slack(fine.residuals_shifted(&fit, stored.w, stored.h));
            return Some(Agreement {
                residual: rms(&strict),
                residual_90: rms(&tolerant[..(tolerant.len() * 9).div_ceil(10)]),
                informative: count as f32 / n as f32,
            });
        }
        let res = coarse.residuals(&fit);
        let mut sorted = res.clone();
        sorted.sort_by(f32::total_cmp);
        let cut = (3.0 * sorted[sorted.len() / 2]).max(8.0);
        for (w, r) in weights.iter_mut().zip(&res) {
            *w = if *r < cut { 1.0 } else { 0.0 };
        }
    }
    None
}

/// 2x2 means of a grid's cells (a last odd row or column is dropped).
fn halve(g: &Grid) -> Grid {
    let (w, h) = (g.w / 2, g.h / 2);
    let mut rgb = Vec::with_capacity(w * h);
    for y in 0..h {
        for x in 0..w {
            let mut acc = [0f32; 3];
            for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                let c = g.at(2 * x + dx, 2 * y + dy);
                for k in 0..3 {
                    acc[k] += c[k] * 0.25;
                }
            }
            rgb.push(acc);
        }
    }
    Grid { w, h, rgb }
}

/// One photometric fit: saturation `k`, gamma (index into [`GAMMAS`]), and the
/// least-squares terms of the tone curve and vignette (see [`TERMS`]).
#[derive(Clone, Copy, Debug)]
struct Fit {
    k: f32,
    gamma: usize,
    coef: [f32; TERMS],
    error: f32,
}

impl Default for Fit {
    fn default() -> Self {
        Fit {
            k: 1.0,
            gamma: 7,
            coef: [0.0, 255.0, 0.0, 0.0, 0.0, 0.0],
            error: f32::INFINITY,
        }
    }
}

/// Steps of the tabulated power curves.
const POW_STEPS: usize = 1024;

/// `x^gamma` for x in 0..=1 in [`POW_STEPS`] steps, for every gamma of [`GAMMAS`].
fn pow_table() -> &'static [[f32; POW_STEPS + 1]; GAMMAS.len()] {
    static TABLE: std::sync::OnceLock<Box<[[f32; POW_STEPS + 1]; GAMMAS.len()]>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        Box::new(std::array::from_fn(|g| {
            std::array::from_fn(|i| (i as f32 / POW_STEPS as f32).powf(GAMMAS[g]))
        }))
    })
}

/// The cells of an aligned pair, flattened for fitting: per cell the stored colour and its
/// luma (what an edit starts from), the checked colour (what it gave) and the squared
/// distance from the centre.
#[derive(Clone)]
struct Samples {
    stored: Vec<[f32; 3]>,
    luma: Vec<f32>,
    checked: Vec<[f32; 3]>,
    r2: Vec<f32>,
}

/// Parameters of the tone curve and vignette fitted by least squares: the checked value is
/// (a + b f)(1 + c r^2 + d r^4), expanded into six linear terms.
const TERMS: usize = 6;

impl Samples {
    fn of(checked: &Grid, stored: &Grid) -> Samples {
        let (w, h) = (stored.w, stored.h);
        Samples {
            stored: stored.rgb.clone(),
            luma: stored.rgb.iter().map(|c| ycc(*c)[0]).collect(),
            checked: checked.rgb.clone(),
            r2: (0..w * h)
                .map(|i| {
                    let u = 2.0 * ((i % w) as f32 + 0.5) / w as f32 - 1.0;
                    let v = 2.0 * ((i / w) as f32 + 0.5) / h as f32 - 1.0;
                    u * u + v * v
                })
                .collect(),
        }
    }

    fn len(&self) -> usize {
        self.checked.len()
    }

    /// The tone curve's input for stored channel value `c` of a cell of luma `l`:
    /// saturation `k` about the luma, then gamma, tabulated.
    fn curve_input(c: f32, l: f32, k: f32, gamma: usize) -> f32 {
        let x = ((l + k * (c - l)) / 255.0).clamp(0.0, 1.0);
        pow_table()[gamma][(x * POW_STEPS as f32 + 0.5) as usize]
    }

    fn terms(f: f64, r2: f64) -> [f64; TERMS] {
        let r4 = r2 * r2;
        [1.0, f, r2, f * r2, r4, f * r4]
    }

    /// Least squares of the checked value from the stored one over every channel of every
    /// cell of weight 1. A clipped checked value (0 or 255) only says the edit went at least
    /// that far: left out of the fit.
    // Indices mirror the normal equations' notation (m[a][b], v[a]).
    #[allow(clippy::needless_range_loop)]
    fn fit(&self, weights: &[f32], k: f32, gamma: usize) -> Fit {
        let mut m = [[0f64; TERMS]; TERMS];
        let mut v = [0f64; TERMS];
        let mut ss = 0f64;
        for i in 0..self.len() {
            if weights[i] == 0.0 {
                continue;
            }
            let r2 = f64::from(self.r2[i]);
            for ch in 0..3 {
                let c = self.checked[i][ch];
                if !(0.5..=254.5).contains(&c) {
                    continue;
                }
                let f = f64::from(Self::curve_input(self.stored[i][ch], self.luma[i], k, gamma));
                let x = Self::terms(f, r2);
                let c = f64::from(c);
                for a in 0..TERMS {
                    v[a] += x[a] * c;
                    for b in a..TERMS {
                        m[a][b] += x[a] * x[b];
                    }
                }
                ss += c * c;
            }
        }
        for a in 0..TERMS {
            for b in 0..a {
                m[a][b] = m[b][a];
            }
        }
        let Some(coef) = solve(m, v) else {
            return Fit::default();
        };
        let error = ss - (0..TERMS).map(|a| coef[a] * v[a]).sum::<f64>();
        Fit {
            k,
            gamma,
            coef: coef.map(|c| c as f32),
            error: error as f32,
        }
    }

    /// The fit's prediction of every cell's checked colour from its stored one.
    fn predictions(&self, fit: &Fit) -> Vec<[f32; 3]> {
        (0..self.len())
            .map(|i| {
                let r2 = f64::from(self.r2[i]);
                std::array::from_fn(|ch| {
                    let f = Self::curve_input(self.stored[i][ch], self.luma[i], fit.k, fit.gamma);
                    let x = Self::terms(f64::from(f), r2);
                    (0..TERMS)
                        .map(|a| fit.coef[a] * x[a] as f32)
                        .sum::<f32>()
                        .clamp(0.0, 255.0)
                })
            })
            .collect()
    }

    /// The colour distance between a prediction and a checked cell. Where the checked value
    /// is clipped, a prediction beyond the clip agrees (a clipped white may have been any
    /// brighter).
    fn distance(p: &[f32; 3], c: &[f32; 3]) -> f32 {
        let mut sum = 0f32;
        for ch in 0..3 {
            let d = if c[ch] > 254.5 {
                (c[ch] - p[ch]).max(0.0)
            } else if c[ch] < 0.5 {
                (p[ch] - c[ch]).max(0.0)
            } else {
                p[ch] - c[ch]
            };
            sum += d * d;
        }
        sum.sqrt()
    }

    /// Per cell, the colour distance between the checked cell and the fit's prediction from
    /// the stored one.
    fn residuals(&self, fit: &Fit) -> Vec<f32> {
        let p = self.predictions(fit);
        p.iter().zip(&self.checked).map(|(p, c)| Self::distance(p, c)).collect()
    }

    /// [`Samples::residuals`] against the best of the stored cell and its 8 neighbours (the
    /// cells form a `w` x `h` grid).
    fn residuals_shifted(&self, fit: &Fit, w: usize, h: usize) -> Vec<f32> {
        let p = self.predictions(fit);
        (0..self.len())
            .map(|i| {
                let (x, y) = (i % w, i / w);
                let mut best = f32::INFINITY;
                for ny in y.saturating_sub(1)..(y + 2).min(h) {
                    for nx in x.saturating_sub(1)..(x + 2).min(w) {
                        best = best.min(Self::distance(&p[ny * w + nx], &self.checked[i]));
                    }
                }
                best
            })
            .collect()
    }
}

/// Solves the system `m x = v` by Gaussian elimination with partial pivoting; `None` when
/// it is (nearly) singular, e.g. a flat stored picture.
// Gaussian elimination in matrix notation (m[row][k]).
#[allow(clippy::needless_range_loop)]
fn solve<const N: usize>(mut m: [[f64; N]; N], mut v: [f64; N]) -> Option<[f64; N]> {
    let scale = (0..N).map(|i| m[i][i].abs()).fold(0f64, f64::max).max(1e-300);
    for col in 0..N {
        let pivot = (col..N).max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs()))?;
        if m[pivot][col].abs() < 1e-9 * scale {
            return None;
        }
        m.swap(col, pivot);
        v.swap(col, pivot);
        for row in col + 1..N {
            let f = m[row][col] / m[col][col];
            for k in col..N {
                m[row][k] -= f * m[col][k];
            }
            v[row] -= f * v[col];
        }
    }
    let mut x = [0f64; N];
    for row in (0..N).rev() {
        let rest: f64 = (row + 1..N).map(|k| m[row][k] * x[k]).sum();
        x[row] = (v[row] - rest) / m[row][row];
    }
    Some(x)
}

/// Per cell, the span of luma over its 3x3 neighbourhood.
fn luma_range(g: &Grid) -> Vec<f32> {
    let (w, h) = (g.w, g.h);
    let luma: Vec<f32> = g.rgb.iter().map(|c| ycc(*c)[0]).collect();
    (0..w * h)
        .map(|i| {
            let (x, y) = (i % w, i / w);
            let (mut lo, mut hi) = (f32::MAX, f32::MIN);
            for ny in y.saturating_sub(1)..(y + 2).min(h) {
                for nx in x.saturating_sub(1)..(x + 2).min(w) {
                    let l = luma[ny * w + nx];
                    lo = lo.min(l);
                    hi = hi.max(l);
                }
            }
            hi - lo
        })
        .collect()
}

/// Which cells of a grid carry something: far from the background colour (the median of
/// the border cells), or with a neighbourhood spanning more than [`INFORMATIVE`] in luma.
fn informative(g: &Grid) -> Vec<bool> {
    let (w, h) = (g.w, g.h);
    let mut border: Vec<[f32; 3]> = Vec::new();
    for x in 0..w {
        border.push(g.at(x, 0));
        border.push(g.at(x, h - 1));
    }
    for y in 1..h.saturating_sub(1) {
        border.push(g.at(0, y));
        border.push(g.at(w - 1, y));
    }
    let bg: [f32; 3] = std::array::from_fn(|k| {
        let mut v: Vec<f32> = border.iter().map(|c| c[k]).collect();
        v.sort_by(f32::total_cmp);
        v[v.len() / 2]
    });
    let luma: Vec<f32> = g.rgb.iter().map(|c| ycc(*c)[0]).collect();
    (0..w * h)
        .map(|i| {
            let (x, y) = (i % w, i / w);
            let c = g.rgb[i];
            let far = (0..3).map(|k| (c[k] - bg[k]).powi(2)).sum::<f32>().sqrt() > INFORMATIVE;
            let (mut lo, mut hi) = (f32::MAX, f32::MIN);
            for ny in y.saturating_sub(1)..(y + 2).min(h) {
                for nx in x.saturating_sub(1)..(x + 2).min(w) {
                    let l = luma[ny * w + nx];
                    lo = lo.min(l);
                    hi = hi.max(l);
                }
            }
            far || hi - lo > INFORMATIVE
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{imageops, Rgb};

    /// A product on white: a textured body in `colour`, a darker strap and a light label,
    /// the kind of look-alike catalog shot the colour check exists for.
    fn product(w: u32, h: u32, colour: [u8; 3]) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
            let body = (0.2..0.8).contains(&fx) && (0.25..0.85).contains(&fy);
            let strap = (0.35..0.65).contains(&fx) && (0.1..0.25).contains(&fy);
            let label = (0.4..0.6).contains(&fx) && (0.45..0.6).contains(&fy);
            if label {
                Rgb([235, 230, 220])
            } else if body || strap {
                // Stitching and shading, so the body is not flat.
                let shade = 1.0 - 0.35 * fy + if (x / 3 + y / 5) % 4 == 0 { -0.08 } else { 0.0 };
                let f = if strap { 0.6 * shade } else { shade };
                Rgb(colour.map(|c| (f32::from(c) * f).clamp(0.0, 255.0) as u8))
            } else {
                Rgb([252, 252, 252])
            }
        })
    }

    fn map_pixels(img: &RgbImage, f: impl Fn([f32; 3]) -> [f32; 3]) -> RgbImage {
        let mut out = img.clone();
        for p in out.pixels_mut() {
            let v = f(p.0.map(f32::from));
            *p = Rgb(v.map(|c| c.round().clamp(0.0, 255.0) as u8));
        }
        out
    }

    fn agreement(checked: &RgbImage, stored: &RgbImage) -> Agreement {
        let (c, s) = (Appearance::of(checked).unwrap(), Appearance::of(stored).unwrap());
        compare(&c.grid(), &s.grid()).unwrap()
    }

    #[test]
    fn photometric_edits_of_a_reupload_agree() {
        let stored = product(240, 320, [150, 40, 40]);
        type Edit = Box<dyn Fn([f32; 3]) -> [f32; 3]>;
        let edits: [(&str, Edit); 4] = [
            ("gamma 2", Box::new(|c| c.map(|v| 255.0 * (v / 255.0).powf(0.5)))),
            ("contrast", Box::new(|c| c.map(|v| 1.3 * (v - 128.0) + 128.0))),
            ("brighter", Box::new(|c| c.map(|v| v + 25.0))),
            (
                "saturation x1.5",
                Box::new(|c| {
                    let l = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2];
                    c.map(|v| l + 1.5 * (v - l))
                }),
            ),
        ];
        for (name, edit) in edits {
            let a = agreement(&map_pixels(&stored, edit), &stored);
            assert!(a.residual < 6.0, "{name}: {a:?}");
        }
    }

    #[test]
    fn a_colour_variant_of_the_same_product_does_not_agree() {
        let red = product(240, 320, [150, 40, 40]);
        for other in [[40, 60, 150], [40, 120, 50], [120, 90, 60]] {
            let a = agreement(&product(240, 320, other), &red);
            assert!(a.residual > 10.0 && a.residual_90 > 10.0, "{other:?}: {a:?}");
        }
    }

    #[test]
    fn a_mirrored_picture_reads_as_the_mirrored_grid() {
        let img = product(240, 320, [150, 40, 40]);
        let mut half = img.clone();
        // Asymmetric, so a wrong flip shows.
        imageops::overlay(&mut half, &RgbImage::from_pixel(40, 60, Rgb([20, 20, 200])), 10, 10);
        let direct = Appearance::of(&imageops::flip_horizontal(&half)).unwrap().grid();
        let through = Appearance::of(&half).unwrap().grid().dihedral(Dihedral::FlipY);
        let worst = direct
            .rgb
            .iter()
            .zip(&through.rgb)
            .flat_map(|(a, b)| (0..3).map(move |k| (a[k] - b[k]).abs()))
            .fold(0f32, f32::max);
        // Only the rounding of the stored bytes and chroma sharing 2x2 cells differ.
        assert!(worst < 4.0, "{worst}");
    }

    #[test]
    fn an_upscaled_thumbnail_keeps_the_thumbnails_detail() {
        let thumb = RgbImage::from_fn(60, 80, |x, y| {
            let v = ((x * 37 + y * 91) ^ (x * y)) % 200;
            Rgb([v as u8 + 20, (v / 2) as u8 + 60, 200 - v as u8])
        });
        let own = effective_side(&thumb);
        assert!((45..=60).contains(&own), "{own}");
        for k in [4, 8] {
            let big = imageops::resize(&thumb, 60 * k, 80 * k, imageops::FilterType::CatmullRom);
            let side = effective_side(&big);
            assert!(side <= 2 * 60, "x{k}: {side}");
        }
    }

    #[test]
    fn too_little_to_compare_gives_none() {
        let flat = Appearance::of(&RgbImage::from_pixel(64, 64, Rgb([250, 250, 250]))).unwrap();
        assert!(compare(&flat.grid(), &flat.grid()).is_none());
        let g = flat.grid();
        assert!(compare(&g.resample(0.0, 0.0, 1.0, 1.0, 16, 16), &g).is_none());
    }
}
