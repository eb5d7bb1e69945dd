//! Recorded figures: a run fails when any figure is worse than the recorded one. Raise the
//! recorded figures (`--write-baseline`) as the work improves them.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Report;

/// Figures that must not fall (recalls) and figures that must not rise (false positives).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Baseline {
    pub at_least: BTreeMap<String, f64>,
    pub at_most: BTreeMap<String, f64>,
}

/// Recalls are compared after rounding to this, so float noise is no regression.
const EPS: f64 = 1e-9;

impl Baseline {
    /// The guarded figures of a report.
    pub fn from_report(r: &Report) -> Baseline {
        let mut b = Baseline::default();
        let (lo, hi) = (&mut b.at_least, &mut b.at_most);
        if let Some(im) = &r.images {
            // A negatives-only run has no evasions and so no recall to record.
            let evasions = im.transforms.iter().chain(std::iter::once(&im.overall));
            for x in evasions.filter(|_| !im.transforms.is_empty()) {
                lo.insert(format!("images.{}.recall_reupload", x.name), x.recall_reupload);
                lo.insert(format!("images.{}.recall_any", x.name), x.recall_any);
            }
            for c in &im.chains {
                lo.insert(format!("images.chains_{}.recall_reupload", c.length), c.recall_reupload);
                lo.insert(format!("images.chains_{}.recall_any", c.length), c.recall_any);
                hi.insert(
                    format!("images.chains_{}.wrong_matches", c.length),
                    c.wrong_matches as f64,
                );
            }
            hi.insert("images.fp_pairs_reupload".into(), im.fp_pairs_reupload as f64);
            hi.insert("images.fp_pairs_any".into(), im.fp_pairs_any as f64);
            let st = &im.same_stamp;
            for (name, v) in [
                ("photo_reupload", st.photo_reupload),
                ("photo_any", st.photo_any),
                ("on_white_reupload", st.on_white_reupload),
                ("on_white_any", st.on_white_any),
            ] {
                hi.insert(format!("images.same_stamp.{name}"), v as f64);
            }
        }
        if let Some(n) = &r.negatives {
            hi.extend(super::negatives::baseline_figures(n));
        }
        if let Some(p) = &r.phash_vs_imagehash {
            hi.insert("phash_vs_imagehash.median".into(), f64::from(p.median));
            hi.insert("phash_vs_imagehash.p95".into(), f64::from(p.p95));
        }
        if let Some(tr) = &r.titles {
            for x in std::iter::once(&tr.real).chain(&tr.edits) {
                lo.insert(format!("titles.{}.recall_support", x.name), x.recall_support);
                lo.insert(format!("titles.{}.recall_review", x.name), x.recall_review);
            }
            lo.insert("titles.combined_recall_reupload".into(), tr.combined_recall_reupload);
            lo.insert("titles.combined_recall_any".into(), tr.combined_recall_any);
            hi.insert("titles.fp_pairs_support".into(), tr.fp_pairs_support as f64);
            hi.insert("titles.fp_pairs_review".into(), tr.fp_pairs_review as f64);
            hi.insert("titles.text_only_reupload".into(), tr.text_only_reupload as f64);
            hi.insert(
                "titles.combined_wrong_reupload".into(),
                tr.combined_wrong_reupload as f64,
            );
        }
        b
    }

    /// One line per recorded figure that `r` does worse on (or no longer reports).
    pub fn regressions(&self, r: &Report) -> Vec<String> {
        let now = Baseline::from_report(r);
        let mut out = Vec::new();
        for (name, &was) in &self.at_least {
            match now.at_least.get(name) {
                Some(&v) if v + EPS >= was => {}
                Some(&v) => out.push(format!("{name} fell from {was:.4} to {v:.4}")),
                None => out.push(format!("{name} is no longer measured")),
            }
        }
        for (name, &was) in &self.at_most {
            match now.at_most.get(name) {
                Some(&v) if v <= was + EPS => {}
                Some(&v) => out.push(format!("{name} rose from {was} to {v}")),
                None => out.push(format!("{name} is no longer measured")),
            }
        }
        out
    }
}
