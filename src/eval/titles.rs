//! Title evaluation: in each label group the first listing is the takedown and the others are
//! candidates; listings of different groups are negatives. Also synthetic re-listing edits of
//! the takedown titles. Runs the daemon's own fingerprinting, index and policy; the image part
//! goes through the hash-only path (a client-sent 64-bit pHash).
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::transforms::SplitMix;
use super::{Curve, EvalError};
use relist_core::domain::{ImageInput, Listing, Verdict};
use relist_core::fingerprint::{DecodeLimits, Fingerprinter, Side};
use relist_core::matcher::LiveIndex;
use relist_core::policy::Thresholds;

/// Largest title distance the curve covers.
pub const TEXT_CURVE_MAX: u32 = 32;

/// One listing of the titles CSV.
#[derive(Clone, Debug)]
pub struct TitleRow {
    pub title: String,
    pub group: String,
    /// Shopee's own 64-bit pHash of the listing photo, when given.
    pub image_phash: Option<u64>,
}

/// Reads a CSV with `title`, `label_group` and optionally `image_phash` columns.
pub fn read_csv(path: &Path) -> Result<Vec<TitleRow>, EvalError> {
    let mut r = csv::Reader::from_path(path).map_err(|e| EvalError::Input(format!("{}: {e}", path.display())))?;
    let headers = r
        .headers()
        .map_err(|e| EvalError::Input(format!("{}: {e}", path.display())))?
        .clone();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let (Some(title), Some(group)) = (col("title"), col("label_group")) else {
        return Err(EvalError::Input(format!(
            "{}: needs `title` and `label_group` columns",
            path.display()
        )));
    };
    let phash = col("image_phash");
    let mut rows = Vec::new();
    for rec in r.records() {
        let rec = rec.map_err(|e| EvalError::Input(format!("{}: {e}", path.display())))?;
        rows.push(TitleRow {
            title: rec.get(title).unwrap_or_default().to_string(),
            group: rec.get(group).unwrap_or_default().to_string(),
            image_phash: phash
                .and_then(|c| rec.get(c))
                .and_then(|h| u64::from_str_radix(h, 16).ok()),
        });
    }
    Ok(rows)
}

/// Text recall of one kind of candidate.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TextRecall {
    pub name: String,
    pub queries: usize,
    /// Share whose title is within `text_support` of its takedown's (supports an image match).
    pub recall_support: f64,
    /// Share whose title alone is sent to review (within `text_review`).
    pub recall_review: f64,
}

/// The title part of the report.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TitleReport {
    pub listings: usize,
    pub groups: usize,
    /// Real candidates (same group as a takedown, other listing).
    pub real: TextRecall,
    /// Pairs of listings from different groups.
    pub cross_pairs: u64,
    /// Cross-group pairs within `text_support` / `text_review`.
    pub fp_pairs_support: u64,
    pub fp_pairs_review: u64,
    pub fpr_support: f64,
    pub fpr_review: f64,
    /// Text-only checks that came back REUPLOAD (must be 0: the title alone never blocks).
    pub text_only_reupload: u64,
    /// Title + client pHash (hash-only API): share of candidates flagged against their own
    /// takedown as REUPLOAD, as REUPLOAD or REVIEW, and candidates flagged against another
    /// group's takedown.
    pub combined_recall_reupload: f64,
    pub combined_recall_any: f64,
    pub combined_wrong_reupload: u64,
    pub combined_wrong_any: u64,
    pub edits: Vec<TextRecall>,
    pub curve: Curve,
}

/// Synthetic re-listing edits of a title, as sellers make them.
pub const EDITS: &[&str] = &[
    "emoji",
    "upper_case",
    "lower_case",
    "reorder",
    "promo_words",
    "digits_for_letters",
    "spaced_letters",
    "typo",
    "chat_spelling",
];

/// Applies `edit` to `title`; `None` when the edit does not apply (no word to change).
pub fn edit(title: &str, edit: &str, seed: u64) -> Option<String> {
    let words: Vec<&str> = title.split_whitespace().collect();
    let mut rng = SplitMix(seed);
    let longest = || {
        words
            .iter()
            .enumerate()
            .filter(|(_, w)| w.chars().all(char::is_alphabetic))
            .max_by_key(|(_, w)| w.chars().count())
            .map(|(i, _)| i)
    };
    let replace_word = |i: usize, new: String| {
        let mut w: Vec<String> = words.iter().map(|s| s.to_string()).collect();
        w[i] = new;
        w.join(" ")
    };
    match edit {
        "emoji" => Some(format!("🔥 {title} ✨💯")),
        "upper_case" => Some(title.to_uppercase()),
        "lower_case" => Some(title.to_lowercase()),
        "reorder" => {
            if words.len() < 3 {
                return None;
            }
            // The first word (often the brand) moves to the end, two others swap.
            let mut w: Vec<&str> = words[1..].to_vec();
            w.push(words[0]);
            let k = rng.below(w.len() - 1);
            w.swap(k, k + 1);
            Some(w.join(" "))
        }
        "promo_words" => Some(format!("READY PROMO COD {title} BEST SELLER ORI")),
        "digits_for_letters" => {
            let leet = |c: char| match c.to_ascii_lowercase() {
                'a' => '4',
                'i' => '1',
                'o' => '0',
                'e' => '3',
                _ => c,
            };
            let out: String = title.chars().map(leet).collect();
            (out != title).then_some(out)
        }
        "spaced_letters" => {
            let i = longest()?;
            let spaced: Vec<String> = words[i].chars().map(String::from).collect();
            Some(replace_word(i, spaced.join(" ")))
        }
        "typo" => {
            let i = longest()?;
            let mut chars: Vec<char> = words[i].chars().collect();
            if chars.len() < 4 {
                return None;
            }
            let k = 1 + rng.below(chars.len() - 2);
            chars[k] = if chars[k] == 'x' { 'z' } else { 'x' };
            Some(replace_word(i, chars.into_iter().collect()))
        }
        "chat_spelling" => {
            const CHAT: [(&str, &str); 6] = [
                ("yang", "yg"),
                ("banget", "bgt"),
                ("dengan", "dgn"),
                ("untuk", "utk"),
                ("tidak", "tdk"),
                ("sudah", "sdh"),
            ];
            let mut changed = false;
            let out: Vec<String> = words
                .iter()
                .map(|w| match CHAT.iter().find(|(long, _)| w.eq_ignore_ascii_case(long)) {
                    Some((_, short)) => {
                        changed = true;
                        short.to_string()
                    }
                    None => w.to_string(),
                })
                .collect();
            changed.then(|| out.join(" "))
        }
        _ => None,
    }
}

fn listing(title: &str, phash: Option<u64>) -> Listing {
    Listing {
        title: title.to_string(),
        images: phash
            .map(|h| ImageInput::Hashes {
                pdq: None,
                pdq_quality: None,
                phash: Some(h),
            })
            .into_iter()
            .collect(),
        ..Listing::default()
    }
}

/// Runs the title evaluation.
pub fn evaluate(rows: &[TitleRow], t: &Thresholds) -> Result<TitleReport, EvalError> {
    let fp = Fingerprinter::new(DecodeLimits::default());
    let wide = Thresholds {
        text_support: t.text_support.max(TEXT_CURVE_MAX),
        ..*t
    };
    let fingerprint = |title: &str, phash: Option<u64>, side: Side| {
        fp.listing(&listing(title, phash), side)
            .map_err(|e| EvalError::Input(e.to_string()))
    };
    // Takedowns: the first listing of each group; id = row index + 1.
    let mut first: BTreeMap<&str, usize> = BTreeMap::new();
    let mut bank = LiveIndex::default();
    for (i, r) in rows.iter().enumerate() {
        if first.contains_key(r.group.as_str()) {
            continue;
        }
        first.insert(&r.group, i);
        let (_, f) = fingerprint(&r.title, r.image_phash, Side::Stored)?;
        bank.add(i as u64 + 1, &f, t.pdq_min_quality);
    }
    let takedown_rows: HashSet<usize> = first.values().copied().collect();
    let own = |r: &TitleRow| first.get(r.group.as_str()).map(|&i| i as u64 + 1);

    let mut real_d = Vec::new();
    let mut text_only_reupload = 0u64;
    let (mut comb_re, mut comb_any, mut wrong_re, mut wrong_any) = (0u64, 0u64, 0u64, 0u64);
    let mut candidates = 0u64;
    for (i, r) in rows.iter().enumerate() {
        if takedown_rows.contains(&i) {
            continue;
        }
        candidates += 1;
        let (_, f) = fingerprint(&r.title, None, Side::Checked)?;
        let found = bank.find(&[], f.title_simhash, &wide);
        let own_id = own(r);
        real_d.push(own_id.and_then(|id| found.get(&id)).and_then(|ev| ev.text_distance));
        text_only_reupload += found
            .values()
            .filter(|ev| t.decide(&ev.images, ev.text_distance).0 == Verdict::Reupload)
            .count() as u64;
        // The same listing with its photo's pHash, through the hash-only path.
        let (images, f) = fingerprint(&r.title, r.image_phash, Side::Checked)?;
        let found = bank.find(&images, f.title_simhash, t);
        let mut wrong = Verdict::Clear;
        for (id, ev) in &found {
            let v = t.decide(&ev.images, ev.text_distance).0;
            if Some(*id) == own_id {
                comb_re += u64::from(v == Verdict::Reupload);
                comb_any += u64::from(v != Verdict::Clear);
            } else {
                wrong = wrong.max(v);
            }
        }
        wrong_re += u64::from(wrong == Verdict::Reupload);
        wrong_any += u64::from(wrong != Verdict::Clear);
    }

    // Cross-group pairs over all listings: every listing registered, every listing checked.
    let mut all = LiveIndex::default();
    let mut simhashes = Vec::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        let (_, f) = fingerprint(&r.title, None, Side::Stored)?;
        all.add(i as u64 + 1, &f, t.pdq_min_quality);
        simhashes.push(f.title_simhash);
    }
    let mut cross: BTreeMap<(usize, usize), u32> = BTreeMap::new();
    for (i, h) in simhashes.iter().enumerate() {
        for (id, ev) in all.find(&[], *h, &wide) {
            let j = id as usize - 1;
            if let (true, Some(d)) = (rows[j].group != rows[i].group, ev.text_distance) {
                cross.insert((i.min(j), i.max(j)), d);
            }
        }
    }
    let same_group_pairs: u64 = {
        let mut sizes: BTreeMap<&str, u64> = BTreeMap::new();
        rows.iter().for_each(|r| *sizes.entry(&r.group).or_default() += 1);
        sizes.values().map(|s| s * s.saturating_sub(1) / 2).sum()
    };
    let n = rows.len() as u64;
    let cross_pairs = n * n.saturating_sub(1) / 2 - same_group_pairs;
    let fp_at = |th: u32| cross.values().filter(|&&d| d <= th).count() as u64;
    let negatives: Vec<Option<u32>> = cross.values().map(|&d| Some(d)).collect();

    let recall = |name: &str, d: &[Option<u32>]| {
        let q = d.len().max(1) as f64;
        let within = |th: u32| d.iter().filter(|x| x.is_some_and(|x| x <= th)).count() as f64 / q;
        TextRecall {
            name: name.to_string(),
            queries: d.len(),
            recall_support: within(t.text_support),
            recall_review: within(t.text_review),
        }
    };
    let mut edits = Vec::new();
    for (k, name) in EDITS.iter().enumerate() {
        let mut d = Vec::new();
        for &i in first.values() {
            let Some(edited) = edit(&rows[i].title, name, (i * EDITS.len() + k) as u64) else {
                continue;
            };
            let (_, f) = fingerprint(&edited, None, Side::Checked)?;
            let found = bank.find(&[], f.title_simhash, &wide);
            d.push(found.get(&(i as u64 + 1)).and_then(|ev| ev.text_distance));
        }
        edits.push(recall(name, &d));
    }
    let cand = candidates.max(1) as f64;
    Ok(TitleReport {
        listings: rows.len(),
        groups: first.len(),
        real: recall("real_candidates", &real_d),
        cross_pairs,
        fp_pairs_support: fp_at(t.text_support),
        fp_pairs_review: fp_at(t.text_review),
        fpr_support: fp_at(t.text_support) as f64 / cross_pairs.max(1) as f64,
        fpr_review: fp_at(t.text_review) as f64 / cross_pairs.max(1) as f64,
        text_only_reupload,
        combined_recall_reupload: comb_re as f64 / cand,
        combined_recall_any: comb_any as f64 / cand,
        combined_wrong_reupload: wrong_re,
        combined_wrong_any: wrong_any,
        edits,
        curve: Curve::from_distances("text_simhash", TEXT_CURVE_MAX, &real_d, &negatives, cross_pairs),
    })
}
