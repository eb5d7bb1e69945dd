//! Hash exchange with other platforms: `relist export` writes the bank's PDQ hashes, and
//! `relist import` registers a shared list as hash-only takedowns.
//!
//! Formats:
//! - `hex`: one lowercase 64-hex PDQ hash a line (import also takes upper case, blank lines
//!   and `#` comments);
//! - `te-csv`: ThreatExchange CSV, header `signal_type,signal_str,collab,category,tags`, with
//!   signal_type `pdq`. Export writes the takedown's marketplace as collab, its reason as
//!   category and `relist_takedown_<id>` as tag; import reads `pdq` rows and skips others.
//!
//! An imported hash becomes the takedown of listing `pdq-<hash>` on the given marketplace, so
//! importing the same list again updates those takedowns instead of adding new ones.
use std::collections::HashSet;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context;
use futures::StreamExt;
use serde::Serialize;

use crate::api::pb;
use crate::cli::{connect, print_json, rpc_error, ClientArgs};
use crate::domain::TakedownId;
use crate::fingerprint::pdq::PdqHash;

/// The ThreatExchange CSV header.
pub const TE_CSV_HEADER: [&str; 5] = ["signal_type", "signal_str", "collab", "category", "tags"];

/// Listing ids of imported hashes start with this.
pub const IMPORTED_LISTING_PREFIX: &str = "pdq-";

/// One image hash of a live takedown, as exported.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportedPdq {
    pub pdq: PdqHash,
    pub takedown_id: TakedownId,
    pub marketplace: String,
    pub reason: String,
}

/// A hash list format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One lowercase 64-hex PDQ hash a line.
    Hex,
    /// ThreatExchange CSV (signal_type,signal_str,collab,category,tags).
    TeCsv,
}

/// `relist export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    #[arg(long, value_enum, default_value = "hex")]
    pub format: Format,
    /// Write here (through a `.part` file, renamed when complete) instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `relist import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The hash list.
    pub file: PathBuf,
    #[arg(long, value_enum, default_value = "hex")]
    pub format: Format,
    /// The marketplace the takedowns are registered for (a writer key's own).
    #[arg(long)]
    pub marketplace: String,
    /// Why they were taken down, stored with each.
    #[arg(long, default_value = "imported hash list")]
    pub reason: String,
    /// Registrations in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// A line of a hash list that cannot be imported.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LineError {
    /// 1-based line number in the file.
    pub line: u64,
    pub message: String,
}

/// What a hash list holds: valid hashes with their line numbers, and the rest.
#[derive(Debug, Default, PartialEq)]
pub struct Parsed {
    pub hashes: Vec<(u64, PdqHash)>,
    /// The same hash again further down the file.
    pub duplicates: u64,
    /// Rows of other signal types (te-csv).
    pub other_signals: u64,
    pub errors: Vec<LineError>,
}

impl Parsed {
    fn push(&mut self, seen: &mut HashSet<PdqHash>, line: u64, text: &str) {
        match PdqHash::from_hex(text.trim()) {
            Some(h) if !seen.insert(h) => self.duplicates += 1,
            Some(h) => self.hashes.push((line, h)),
            None => self.errors.push(LineError {
                line,
                message: format!("not a PDQ hash (64 hex characters): {:?}", clip(text.trim())),
            }),
        }
    }
}

fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Parses a hash list. Only an unreadable file (or a te-csv file without its columns) is an
/// error; bad lines are reported in [`Parsed::errors`] with their numbers.
pub fn parse(format: Format, input: impl std::io::Read) -> anyhow::Result<Parsed> {
    let mut out = Parsed::default();
    let mut seen = HashSet::new();
    match format {
        Format::Hex => {
            let reader = std::io::BufReader::new(input);
            for (i, line) in reader.split(b'\n').enumerate() {
                let line_no = i as u64 + 1;
                let bytes = line.context("reading the hash list")?;
                let Ok(text) = std::str::from_utf8(&bytes) else {
                    out.errors.push(LineError {
                        line: line_no,
                        message: "not UTF-8".into(),
                    });
                    continue;
                };
                let text = text.trim();
                if text.is_empty() || text.starts_with('#') {
                    continue;
                }
                out.push(&mut seen, line_no, text);
            }
        }
        Format::TeCsv => {
            let mut r = csv::ReaderBuilder::new().flexible(true).from_reader(input);
            let headers = r.headers().context("reading the CSV header")?.clone();
            let col = |name: &str| headers.iter().position(|h| h.trim().eq_ignore_ascii_case(name));
            let (Some(kind), Some(value)) = (col("signal_type"), col("signal_str")) else {
                anyhow::bail!(
                    "not a ThreatExchange CSV: the header needs signal_type and signal_str (expected {})",
                    TE_CSV_HEADER.join(",")
                );
            };
            for row in r.byte_records() {
                let row = match row {
                    Ok(row) => row,
                    Err(e) => {
                        let line = e.position().map_or(0, |p| p.line());
                        out.errors.push(LineError {
                            line,
                            message: format!("unreadable CSV row: {e}"),
                        });
                        continue;
                    }
                };
                let line = row.position().map_or(0, |p| p.line());
                let field = |i: usize| std::str::from_utf8(row.get(i).unwrap_or_default()).ok();
                match field(kind).map(str::trim) {
                    Some(k) if k.eq_ignore_ascii_case("pdq") => {}
                    Some(_) => {
                        out.other_signals += 1;
                        continue;
                    }
                    None => {
                        out.errors.push(LineError {
                            line,
                            message: "signal_type is not UTF-8".into(),
                        });
                        continue;
                    }
                }
                match field(value) {
                    Some(v) => out.push(&mut seen, line, v),
                    None => out.errors.push(LineError {
                        line,
                        message: "signal_str is missing or not UTF-8".into(),
                    }),
                }
            }
        }
    }
    Ok(out)
}

/// Writes exported hashes in `format`; each distinct hash once. Returns how many were written.
pub struct Writer<W: Write> {
    format: Format,
    out: csv::Writer<W>,
    seen: HashSet<PdqHash>,
    written: u64,
}

impl<W: Write> Writer<W> {
    pub fn new(format: Format, out: W) -> anyhow::Result<Self> {
        let mut out = csv::WriterBuilder::new().flexible(true).from_writer(out);
        if format == Format::TeCsv {
            out.write_record(TE_CSV_HEADER)?;
        }
        Ok(Writer {
            format,
            out,
            seen: HashSet::new(),
            written: 0,
        })
    }

    pub fn write(&mut self, h: &ExportedPdq) -> anyhow::Result<()> {
        if !self.seen.insert(h.pdq) {
            return Ok(());
        }
        let hex = h.pdq.to_hex();
        match self.format {
            Format::Hex => self.out.write_record([hex.as_str()])?,
            Format::TeCsv => {
                let tag = format!("relist_takedown_{}", h.takedown_id);
                self.out
                    .write_record(["pdq", hex.as_str(), h.marketplace.as_str(), h.reason.as_str(), &tag])?
            }
        }
        self.written += 1;
        Ok(())
    }

    /// Flushes and hands back the output.
    pub fn finish(self) -> anyhow::Result<(W, u64)> {
        let written = self.written;
        let out = self
            .out
            .into_inner()
            .map_err(|e| anyhow::anyhow!("writing hashes: {}", e.error()))?;
        Ok((out, written))
    }
}

fn exported_from_proto(p: pb::ExportedHash) -> anyhow::Result<ExportedPdq> {
    Ok(ExportedPdq {
        pdq: PdqHash::from_hex(&p.pdq).with_context(|| format!("the daemon sent a bad hash {:?}", p.pdq))?,
        takedown_id: p.takedown_id,
        marketplace: p.marketplace,
        reason: p.reason,
    })
}

/// Runs `relist export`.
pub async fn run_export(args: ExportArgs) -> anyhow::Result<()> {
    let mut stream = connect(&args.client.addr)
        .await?
        .export_hashes(pb::ExportHashesRequest {})
        .await
        .map_err(rpc_error)?
        .into_inner();
    let part = args.out.as_ref().map(|p| {
        let mut s = p.clone().into_os_string();
        s.push(".part");
        PathBuf::from(s)
    });
    let sink: Box<dyn Write> = match &part {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut w = Writer::new(args.format, sink)?;
    let mut takedowns = HashSet::new();
    let copied: anyhow::Result<()> = async {
        while let Some(item) = stream.next().await {
            let h = exported_from_proto(item.map_err(rpc_error)?)?;
            takedowns.insert(h.takedown_id);
            w.write(&h)?;
        }
        Ok(())
    }
    .await;
    let finished = copied.and_then(|()| w.finish());
    let (mut sink, written) = match finished {
        Ok(v) => v,
        Err(e) => {
            if let Some(p) = &part {
                let _ = std::fs::remove_file(p);
            }
            return Err(e);
        }
    };
    sink.flush()?;
    drop(sink);
    if let (Some(part), Some(out)) = (&part, &args.out) {
        std::fs::rename(part, out).with_context(|| format!("renaming {} to {}", part.display(), out.display()))?;
        let summary = serde_json::json!({
            "file": out,
            "hashes": written,
            "takedowns": takedowns.len(),
        });
        if args.client.json {
            return print_json(&summary);
        }
        eprintln!(
            "exported {written} hashes of {} takedowns to {}",
            takedowns.len(),
            out.display()
        );
    } else {
        eprintln!("exported {written} hashes of {} takedowns", takedowns.len());
    }
    Ok(())
}

/// What `relist import` did.
#[derive(Debug, Default, Serialize)]
pub struct ImportSummary {
    /// Hashes registered as new takedowns.
    pub imported: u64,
    /// Hashes not registered anew: already there (updated), repeated in the file, or rows
    /// of other signal types.
    pub skipped: u64,
    pub already_present: u64,
    pub duplicates: u64,
    pub other_signals: u64,
    /// Lines not imported, with their numbers: bad hashes, and refusals by the daemon.
    pub errors: Vec<LineError>,
}

/// The hash-only takedown request for an imported hash.
pub fn import_request(h: &PdqHash, marketplace: &str, reason: &str) -> pb::RegisterTakedownRequest {
    let hex = h.to_hex();
    pb::RegisterTakedownRequest {
        listing: Some(pb::Listing {
            listing_id: format!("{IMPORTED_LISTING_PREFIX}{hex}"),
            marketplace: marketplace.to_string(),
            seller_id: String::new(),
            title: String::new(),
            description: String::new(),
            images: vec![pb::Image {
                pdq: hex,
                ..Default::default()
            }],
        }),
        reason: reason.to_string(),
        taken_down_at: None,
    }
}

/// Registers one hash, retrying a few times while the daemon sheds load.
async fn register(
    mut client: crate::cli::Client,
    req: pb::RegisterTakedownRequest,
) -> Result<pb::RegisterTakedownResponse, tonic::Status> {
    let mut wait = std::time::Duration::from_millis(100);
    for _ in 0..5 {
        match client.register_takedown(req.clone()).await {
            Err(s) if s.code() == tonic::Code::ResourceExhausted && s.message().contains("server busy") => {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            other => return other.map(tonic::Response::into_inner),
        }
    }
    client.register_takedown(req).await.map(tonic::Response::into_inner)
}

/// Runs `relist import`.
pub async fn run_import(args: ImportArgs) -> anyhow::Result<()> {
    let file = std::fs::File::open(&args.file).with_context(|| format!("opening {}", args.file.display()))?;
    let parsed = parse(args.format, file).with_context(|| format!("reading {}", args.file.display()))?;
    let client = connect(&args.client.addr).await?;
    let mut summary = ImportSummary {
        duplicates: parsed.duplicates,
        other_signals: parsed.other_signals,
        errors: parsed.errors,
        ..Default::default()
    };
    let bar = (std::io::stderr().is_terminal() && !args.client.json).then(|| {
        let b = indicatif::ProgressBar::new(parsed.hashes.len() as u64);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{elapsed_precise} [{wide_bar:.cyan/blue}] {pos}/{len} ETA {eta}")
        {
            b.set_style(style.progress_chars("=> "));
        }
        b
    });
    let (marketplace, reason) = (args.marketplace.as_str(), args.reason.as_str());
    let mut results = futures::stream::iter(parsed.hashes.iter().map(|(line, h)| {
        let req = import_request(h, marketplace, reason);
        let client = client.clone();
        async move { (*line, register(client, req).await) }
    }))
    .buffer_unordered(args.concurrency.max(1));
    while let Some((line, result)) = results.next().await {
        match result {
            Ok(r) if r.updated => summary.already_present += 1,
            Ok(_) => summary.imported += 1,
            Err(s) => summary.errors.push(LineError {
                line,
                message: format!("{:?}: {}", s.code(), s.message()),
            }),
        }
        if let Some(b) = &bar {
            b.inc(1);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    summary.errors.sort_by_key(|e| e.line);
    summary.skipped = summary.already_present + summary.duplicates + summary.other_signals;
    if args.client.json {
        print_json(&summary)?;
    } else {
        println!(
            "imported {}, skipped {} ({} already present, {} repeated, {} other signal types), {} errors",
            summary.imported,
            summary.skipped,
            summary.already_present,
            summary.duplicates,
            summary.other_signals,
            summary.errors.len()
        );
        for e in summary.errors.iter().take(50) {
            println!("line {}: {}", e.line, e.message);
        }
    }
    if !summary.errors.is_empty() {
        anyhow::bail!("{} lines not imported", summary.errors.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(b: u8) -> PdqHash {
        PdqHash([b; 32])
    }

    #[test]
    fn hex_lists_report_bad_lines_by_number() {
        let text = format!(
            "# shared list\n{}\n\n{}\nnot-a-hash\n{}\n{}\n",
            h(1).to_hex(),
            h(2).to_hex().to_uppercase(),
            h(1).to_hex(),
            &h(3).to_hex()[..63]
        );
        let p = parse(Format::Hex, text.as_bytes()).unwrap();
        assert_eq!(p.hashes, vec![(2, h(1)), (4, h(2))]);
        assert_eq!(p.duplicates, 1);
        assert_eq!(p.errors.iter().map(|e| e.line).collect::<Vec<_>>(), vec![5, 7]);
    }

    #[test]
    fn te_csv_round_trips_and_skips_other_signals() {
        let mut w = Writer::new(Format::TeCsv, Vec::new()).unwrap();
        for (i, b) in [1u8, 2, 1].into_iter().enumerate() {
            w.write(&ExportedPdq {
                pdq: h(b),
                takedown_id: i as u64 + 1,
                marketplace: "m".into(),
                reason: "counterfeit, fake".into(),
            })
            .unwrap();
        }
        let (mut bytes, n) = w.finish().unwrap();
        assert_eq!(n, 2);
        bytes.extend_from_slice(b"md5,abc,m,x,\npdq,zz,m,x,\n");
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with("signal_type,signal_str,collab,category,tags\npdq,"));
        let p = parse(Format::TeCsv, bytes.as_slice()).unwrap();
        assert_eq!(p.hashes, vec![(2, h(1)), (3, h(2))]);
        assert_eq!(p.other_signals, 1);
        assert_eq!(p.errors.len(), 1);
        assert_eq!(p.errors[0].line, 5);
        assert!(parse(Format::TeCsv, "a,b\n1,2\n".as_bytes()).is_err());
    }

    #[test]
    fn hex_export_is_one_lowercase_hash_a_line() {
        let mut w = Writer::new(Format::Hex, Vec::new()).unwrap();
        w.write(&ExportedPdq {
            pdq: h(0xab),
            takedown_id: 1,
            marketplace: "m".into(),
            reason: String::new(),
        })
        .unwrap();
        let (bytes, _) = w.finish().unwrap();
        assert_eq!(String::from_utf8(bytes).unwrap(), format!("{}\n", "ab".repeat(32)));
    }
}
