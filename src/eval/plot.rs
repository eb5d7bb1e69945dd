//! The report as a hand-written SVG a person can look at: per-evasion recall bars and, per
//! signal, recall and false-positive rate against the threshold.
use std::fmt::Write;

use super::{Curve, Report};

const W: f64 = 900.0;
const PANEL_H: f64 = 260.0;

/// The SVG document for `r`.
pub fn svg(r: &Report) -> String {
    let mut curves: Vec<&Curve> = Vec::new();
    let mut bars: Vec<(String, f64, f64)> = Vec::new();
    if let Some(im) = &r.images {
        curves.extend(&im.curves);
        bars.extend(
            im.transforms
                .iter()
                .chain(std::iter::once(&im.overall))
                .map(|x| (x.name.clone(), x.recall_reupload, x.recall_any)),
        );
    }
    if let Some(tr) = &r.titles {
        curves.push(&tr.curve);
    }
    let bar_h = 16.0;
    let bars_h = if bars.is_empty() {
        0.0
    } else {
        40.0 + bars.len() as f64 * bar_h
    };
    let height = bars_h + curves.len() as f64 * (PANEL_H + 30.0) + 20.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    if !bars.is_empty() {
        let _ = writeln!(
            s,
            r#"<text x="10" y="20" font-size="14">Recall per evasion at the default thresholds (dark: REUPLOAD, light: +REVIEW)</text>"#
        );
        let (x0, bw) = (170.0, 620.0);
        for (i, (name, re, any)) in bars.iter().enumerate() {
            let y = 35.0 + i as f64 * bar_h;
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" text-anchor="end">{name}</text>"#,
                x0 - 6.0,
                y + 11.0
            );
            let _ = writeln!(
                s,
                r##"<rect x="{x0}" y="{y}" width="{:.1}" height="{}" fill="#9ecae1"/>"##,
                any * bw,
                bar_h - 3.0
            );
            let _ = writeln!(
                s,
                r##"<rect x="{x0}" y="{y}" width="{:.1}" height="{}" fill="#3182bd"/>"##,
                re * bw,
                bar_h - 3.0
            );
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}">{:.1}%</text>"#,
                x0 + bw + 6.0,
                y + 11.0,
                re * 100.0
            );
        }
    }
    for (k, c) in curves.iter().enumerate() {
        panel(&mut s, c, bars_h + 10.0 + k as f64 * (PANEL_H + 30.0));
    }
    s.push_str("</svg>\n");
    s
}

/// One signal: recall (linear, left axis) and FPR (log10 from 1e-6 to 1, right axis).
fn panel(s: &mut String, c: &Curve, top: f64) {
    let (x0, y0, pw, ph) = (70.0, top + 30.0, W - 160.0, PANEL_H - 50.0);
    let max_t = c.points.last().map_or(1, |p| p.threshold.max(1)) as f64;
    let x = |t: u32| x0 + f64::from(t) / max_t * pw;
    let y_recall = |r: f64| y0 + ph - r * ph;
    let y_fpr = |f: f64| y0 + ph - ((f.max(1e-6).log10() + 6.0) / 6.0) * ph;
    let _ = writeln!(
        s,
        r#"<text x="10" y="{}" font-size="14">{}: recall (blue, left) and false-positive rate (red, log, right) by threshold</text>"#,
        top + 16.0,
        c.signal
    );
    let _ = writeln!(
        s,
        r##"<rect x="{x0}" y="{y0}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>"##
    );
    for i in 0..=4 {
        let r = f64::from(i) / 4.0;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{:.0}%</text>"#,
            x0 - 4.0,
            y_recall(r) + 4.0,
            r * 100.0
        );
    }
    for e in (0..=6).step_by(2) {
        let f = 10f64.powi(-e);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{:.1}">1e-{e}</text>"#,
            x0 + pw + 4.0,
            y_fpr(f) + 4.0
        );
    }
    let ticks = 8u32;
    for i in 0..=ticks {
        let t = (max_t as u32 * i) / ticks;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{t}</text>"#,
            x(t),
            y0 + ph + 14.0
        );
    }
    let line = |f: &dyn Fn(&super::CurvePoint) -> f64| {
        c.points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.threshold), f(p)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let _ = writeln!(
        s,
        r##"<polyline fill="none" stroke="#3182bd" stroke-width="2" points="{}"/>"##,
        line(&|p| y_recall(p.recall))
    );
    let _ = writeln!(
        s,
        r##"<polyline fill="none" stroke="#de2d26" stroke-width="2" points="{}"/>"##,
        line(&|p| y_fpr(p.fpr))
    );
}
