//! Progress while a batch runs: a bar with rate and ETA on a terminal, plain lines every few
//! seconds otherwise; counters shared with the results writer.
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::results::Row;

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal, else plain lines.
    Auto,
    /// Plain lines on stderr.
    Lines,
    /// Nothing.
    Off,
}

/// What has been written so far in this run.
#[derive(Debug, Default)]
pub struct Counters {
    pub reupload: AtomicU64,
    pub review: AtomicU64,
    pub clear: AtomicU64,
    pub errors: AtomicU64,
    /// Catalog bytes up to the last listing written.
    pub offset: AtomicU64,
}

impl Counters {
    pub fn add(&self, row: &Row, offset: u64) {
        let c = match row.verdict.as_deref() {
            _ if row.error.is_some() => &self.errors,
            Some("REUPLOAD") => &self.reupload,
            Some("REVIEW") => &self.review,
            _ => &self.clear,
        };
        c.fetch_add(1, Relaxed);
        self.offset.fetch_max(offset, Relaxed);
    }

    pub fn total(&self) -> u64 {
        self.reupload.load(Relaxed) + self.review.load(Relaxed) + self.clear.load(Relaxed) + self.errors.load(Relaxed)
    }

    fn line(&self, elapsed: Duration) -> String {
        let n = self.total();
        format!(
            "{n} checked ({:.0}/s): {} REUPLOAD, {} REVIEW, {} CLEAR, {} errors",
            n as f64 / elapsed.as_secs_f64().max(1e-9),
            self.reupload.load(Relaxed),
            self.review.load(Relaxed),
            self.clear.load(Relaxed),
            self.errors.load(Relaxed)
        )
    }
}

/// A running progress display; [`Progress::finish`] removes it.
pub struct Progress {
    bar: Option<ProgressBar>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// Starts showing `counters`; `total_bytes` is the catalog's size when known (for the
    /// percentage and ETA).
    pub fn start(
        mode: ProgressMode,
        interval: Duration,
        counters: Arc<Counters>,
        total_bytes: Option<u64>,
    ) -> Progress {
        let started = Instant::now();
        let tty = std::io::stderr().is_terminal();
        match mode {
            ProgressMode::Off => Progress { bar: None, task: None },
            ProgressMode::Auto if tty => {
                let bar = match total_bytes {
                    Some(t) if t > 0 => {
                        let b = ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr());
                        b.set_style(
                            ProgressStyle::with_template(
                                "{elapsed_precise} [{wide_bar:.cyan/blue}] {percent:>3}% ETA {eta}  {msg}",
                            )
                            .expect("template")
                            .progress_chars("=> "),
                        );
                        b
                    }
                    _ => {
                        let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
                        b.set_style(
                            ProgressStyle::with_template("{spinner} {elapsed_precise}  {msg}").expect("template"),
                        );
                        b
                    }
                };
                let b = bar.clone();
                let task = tokio::spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_millis(200));
                    loop {
                        tick.tick().await;
                        b.set_position(counters.offset.load(Relaxed));
                        b.set_message(counters.line(started.elapsed()));
                    }
                });
                Progress {
                    bar: Some(bar),
                    task: Some(task),
                }
            }
            ProgressMode::Auto | ProgressMode::Lines => {
                let task = tokio::spawn(async move {
                    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(100)));
                    tick.tick().await;
                    loop {
                        tick.tick().await;
                        let elapsed = started.elapsed();
                        let mut line = format!("relist batch: {}", counters.line(elapsed));
                        if let Some(t) = total_bytes.filter(|&t| t > 0) {
                            let f = (counters.offset.load(Relaxed) as f64 / t as f64).min(1.0);
                            line.push_str(&format!(", {:.1}% of the catalog", f * 100.0));
                            if f > 0.0 {
                                let eta = elapsed.as_secs_f64() * (1.0 - f) / f;
                                let eta = Duration::from_secs(eta.round() as u64);
                                line.push_str(&format!(", ETA {}", humantime::format_duration(eta)));
                            }
                        }
                        eprintln!("{line}");
                    }
                });
                Progress {
                    bar: None,
                    task: Some(task),
                }
            }
        }
    }

    /// Prints a line above the bar (or plainly).
    pub fn println(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.println(msg),
            None => eprintln!("{msg}"),
        }
    }

    pub fn finish(self) {
        if let Some(t) = self.task {
            t.abort();
        }
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}
