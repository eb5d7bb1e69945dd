//! The results file: one row per listing, JSON Lines or CSV, appended one whole line per
//! write so that a crash or Ctrl-C leaves a valid prefix; and resuming from it (plus the
//! `.done` side file that `--only-matches` keeps).
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use relist_proto::api::pb;

use super::catalog::Format;

/// One results row. Absent values are `null` in JSON Lines and empty in CSV.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// 1-based position of the record in the catalog.
    pub record: u64,
    pub listing_id: String,
    pub marketplace: String,
    /// REUPLOAD, REVIEW or CLEAR; empty when the listing could not be checked.
    pub verdict: Option<String>,
    pub score: Option<f64>,
    /// The strongest match: the takedown, its marketplace and listing id.
    pub takedown_id: Option<u64>,
    pub takedown_marketplace: Option<String>,
    pub takedown_listing_id: Option<String>,
    /// The best image evidence of the strongest match: its distance and hash kind (pdq|phash).
    pub image_distance: Option<u32>,
    pub image_hash_kind: Option<String>,
    /// The strongest match's title distance, when within the text threshold.
    pub text_distance: Option<u32>,
    pub same_seller: Option<bool>,
    /// How many takedowns matched.
    pub matches: Option<u32>,
    /// The daemon's history id of this (non-clear) result.
    pub match_id: Option<u64>,
    /// Why the listing was not checked: a client-side failure (file, URL, malformed record)
    /// or the daemon's per-item error.
    pub error: Option<String>,
}

/// The CSV header, in [`Row`]'s field order.
pub const COLUMNS: &[&str] = &[
    "record",
    "listing_id",
    "marketplace",
    "verdict",
    "score",
    "takedown_id",
    "takedown_marketplace",
    "takedown_listing_id",
    "image_distance",
    "image_hash_kind",
    "text_distance",
    "same_seller",
    "matches",
    "match_id",
    "error",
];

impl Row {
    pub fn error(record: u64, listing_id: &str, marketplace: &str, error: String) -> Row {
        Row {
            record,
            listing_id: listing_id.to_string(),
            marketplace: marketplace.to_string(),
            // One line per row, in both formats.
            error: Some(error.replace(['\r', '\n'], " ")),
            ..Default::default()
        }
    }

    /// The row for a daemon answer.
    pub fn answer(
        record: u64,
        listing_id: &str,
        marketplace: &str,
        outcome: Option<pb::check_listings_response::Outcome>,
    ) -> Row {
        use pb::check_listings_response::Outcome;
        match outcome {
            Some(Outcome::Result(r)) => {
                let verdict = match pb::Verdict::try_from(r.verdict) {
                    Ok(pb::Verdict::Reupload) => "REUPLOAD",
                    Ok(pb::Verdict::Review) => "REVIEW",
                    _ => "CLEAR",
                };
                let best = r.matches.first();
                let evidence = best.and_then(|m| m.images.first());
                Row {
                    record,
                    listing_id: listing_id.to_string(),
                    marketplace: marketplace.to_string(),
                    verdict: Some(verdict.to_string()),
                    score: Some(r.score),
                    takedown_id: best.map(|m| m.takedown_id),
                    takedown_marketplace: best.map(|m| m.marketplace.clone()),
                    takedown_listing_id: best.map(|m| m.listing_id.clone()),
                    image_distance: evidence.map(|e| e.distance),
                    image_hash_kind: evidence
                        .map(|e| relist_proto::api::kind_from_proto(e.hash_kind).name().to_string()),
                    text_distance: best.and_then(|m| m.text_distance),
                    same_seller: best.map(|m| m.same_seller),
                    matches: Some(r.matches.len() as u32),
                    match_id: (r.match_id != 0).then_some(r.match_id),
                    error: None,
                }
            }
            Some(Outcome::Error(e)) => {
                let code = tonic::Code::from_i32(e.code);
                Row::error(
                    record,
                    listing_id,
                    marketplace,
                    format!("daemon: {code:?}: {}", e.message),
                )
            }
            None => Row::error(record, listing_id, marketplace, "daemon: answer without outcome".into()),
        }
    }

    pub fn is_match(&self) -> bool {
        matches!(self.verdict.as_deref(), Some("REUPLOAD" | "REVIEW"))
    }
}

/// The resume key of a listing: marketplace (trimmed, lowercased) and listing id; a record
/// without a listing id is keyed by its position in the catalog.
pub fn key(marketplace: &str, listing_id: &str, record: u64) -> u128 {
    let k = if listing_id.is_empty() {
        format!("\u{0}#{record}")
    } else {
        format!("{}\u{0}{listing_id}", marketplace.trim().to_lowercase())
    };
    xxhash_rust::xxh3::xxh3_128(k.as_bytes())
}

/// The results file, open for appending.
pub struct ResultsFile {
    file: File,
    format: Format,
    done_file: Option<File>,
    line: Vec<u8>,
}

/// The `.done` side file kept beside RESULTS with `--only-matches`.
pub fn done_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".done");
    PathBuf::from(s)
}

impl ResultsFile {
    /// Opens (or creates) `path`, reads the keys of the listings already in it (and in its
    /// `.done` side file, if any) and cuts a torn last line left by a crash.
    pub fn open(path: &Path, format: Format, only_matches: bool) -> anyhow::Result<(ResultsFile, HashSet<u128>)> {
        let mut done = HashSet::new();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("opening results {}", path.display()))?;
        let len = cut_torn_line(&mut file).with_context(|| format!("repairing {}", path.display()))?;
        file.seek(SeekFrom::Start(0))?;
        read_keys(&mut file, format, &mut done).with_context(|| format!("resuming from {}", path.display()))?;
        file.seek(SeekFrom::End(0))?;
        if len == 0 && format == Format::Csv {
            let mut w = csv::Writer::from_writer(Vec::new());
            w.write_record(COLUMNS)?;
            file.write_all(&w.into_inner()?)?;
        }
        let dpath = done_path(path);
        let done_file = if only_matches || dpath.exists() {
            let mut f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&dpath)
                .with_context(|| format!("opening {}", dpath.display()))?;
            cut_torn_line(&mut f)?;
            f.seek(SeekFrom::Start(0))?;
            for (n, line) in BufReader::new(&mut f).lines().enumerate() {
                let line = line?;
                let k = u128::from_str_radix(line.trim(), 16)
                    .with_context(|| format!("{} line {}: not a key", dpath.display(), n + 1))?;
                done.insert(k);
            }
            f.seek(SeekFrom::End(0))?;
            Some(f)
        } else {
            None
        };
        Ok((
            ResultsFile {
                file,
                format,
                done_file,
                line: Vec::with_capacity(512),
            },
            done,
        ))
    }

    /// Appends a row (one write, then flush); with `write_row` false only its key is noted
    /// in the `.done` file.
    pub fn write(&mut self, row: &Row, write_row: bool) -> anyhow::Result<()> {
        if write_row {
            self.line.clear();
            match self.format {
                Format::Jsonl => {
                    serde_json::to_writer(&mut self.line, row)?;
                    self.line.push(b'\n');
                }
                Format::Csv => {
                    let mut w = csv::WriterBuilder::new()
                        .has_headers(false)
                        .from_writer(std::mem::take(&mut self.line));
                    w.serialize(row)?;
                    self.line = w.into_inner().map_err(|e| anyhow::anyhow!("{}", e.error()))?;
                }
            }
            self.file.write_all(&self.line).context("writing results")?;
            self.file.flush()?;
        }
        if let Some(f) = &mut self.done_file {
            let k = key(&row.marketplace, &row.listing_id, row.record);
            f.write_all(format!("{k:032x}\n").as_bytes())
                .context("writing the .done file")?;
            f.flush()?;
        }
        Ok(())
    }
}

/// Truncates the file after its last newline (a line cut short by a crash); returns the new
/// length.
fn cut_torn_line(f: &mut File) -> std::io::Result<u64> {
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    // Scan back from the end for the last newline, in blocks.
    let mut end = len;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let start = end.saturating_sub(buf.len() as u64);
        let n = (end - start) as usize;
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut buf[..n])?;
        if let Some(i) = buf[..n].iter().rposition(|&b| b == b'\n') {
            let keep = start + i as u64 + 1;
            if keep != len {
                tracing::warn!(kept = keep, was = len, "cutting a torn last line");
                f.set_len(keep)?;
            }
            return Ok(keep);
        }
        if start == 0 {
            f.set_len(0)?;
            return Ok(0);
        }
        end = start;
    }
}

#[derive(Deserialize)]
struct KeyRow {
    #[serde(default)]
    record: u64,
    #[serde(default)]
    listing_id: String,
    #[serde(default)]
    marketplace: String,
}

fn read_keys(f: &mut File, format: Format, done: &mut HashSet<u128>) -> anyhow::Result<()> {
    match format {
        Format::Jsonl => {
            for (n, line) in BufReader::new(f).lines().enumerate() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                let r: KeyRow = serde_json::from_str(&line)
                    .with_context(|| format!("line {} is not a results row (is --out-format right?)", n + 1))?;
                done.insert(key(&r.marketplace, &r.listing_id, r.record));
            }
        }
        Format::Csv => {
            let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(BufReader::new(f));
            let headers = rdr.headers()?.clone();
            if headers.is_empty() {
                return Ok(());
            }
            let col = |name: &str| headers.iter().position(|h| h == name);
            let (Some(id), Some(mk)) = (col("listing_id"), col("marketplace")) else {
                bail!("its CSV header has no listing_id and marketplace columns (is --out-format right?)");
            };
            let rec = col("record");
            for row in rdr.records() {
                let row = row?;
                let record = rec.and_then(|i| row.get(i)).and_then(|s| s.parse().ok()).unwrap_or(0);
                done.insert(key(row.get(mk).unwrap_or(""), row.get(id).unwrap_or(""), record));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_lines_are_cut_and_keys_read() {
        let dir = tempfile::tempdir().unwrap();
        for format in [Format::Jsonl, Format::Csv] {
            let p = dir.path().join(format!("r.{format:?}"));
            {
                let (mut f, done) = ResultsFile::open(&p, format, false).unwrap();
                assert!(done.is_empty());
                for i in 0..3 {
                    let mut r = Row::error(i + 1, &format!("id{i}"), "Shopee", "boom,\n\"x\"".into());
                    r.score = Some(0.5);
                    f.write(&r, true).unwrap();
                }
            }
            let mut text = std::fs::read(&p).unwrap();
            text.extend_from_slice(b"4,id3,sho");
            std::fs::write(&p, &text).unwrap();
            let (_, done) = ResultsFile::open(&p, format, false).unwrap();
            assert_eq!(done.len(), 3, "{format:?}");
            assert!(done.contains(&key("shopee ", "id2", 3)));
            assert!(!std::fs::read(&p).unwrap().ends_with(b"sho"));
        }
    }
}
