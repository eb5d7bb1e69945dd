//! `relist export` and `relist import`: the bank's PDQ hashes written as a shared list, and a
//! shared list registered as hash-only takedowns. The list formats are relist-core's
//! [`relist_core::exchange`].
use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context;
use futures::StreamExt;
use relist_core::exchange::{parse, ExportedPdq, Format, LineError, Writer, IMPORTED_LISTING_PREFIX};
use relist_core::fingerprint::pdq::PdqHash;
use serde::Serialize;

use relist_proto::api::pb;

use crate::client::{part_path, print_json, rpc_error, Client, ClientArgs};

/// A hash list format on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    /// One lowercase 64-hex PDQ hash a line.
    Hex,
    /// ThreatExchange CSV (signal_type,signal_str,collab,category,tags).
    TeCsv,
}

impl FormatArg {
    /// The format a hash list's file name says: `.csv` is ThreatExchange CSV, the rest hex
    /// lines (`.txt`, `.hex`, none).
    pub fn from_path(p: &std::path::Path) -> FormatArg {
        match p.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("csv") => FormatArg::TeCsv,
            _ => FormatArg::Hex,
        }
    }
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::Hex => Format::Hex,
            FormatArg::TeCsv => Format::TeCsv,
        }
    }
}

/// `relist export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The hash list format to write.
    #[arg(long, value_enum, default_value = "hex")]
    pub format: FormatArg,
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
    /// The hash list format of FILE [default: from its extension, as `batch` does: .csv is
    /// te-csv, anything else hex].
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
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

/// Runs `relist export`.
pub async fn run_export(args: ExportArgs) -> anyhow::Result<()> {
    let export = |mut c: Client| async move { c.export_hashes(pb::ExportHashesRequest {}).await };
    let mut stream = args.client.call(export).await?;
    let part = args.out.as_deref().map(part_path);
    let sink: Box<dyn Write> = match &part {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut w = Writer::new(args.format.into(), sink)?;
    let mut takedowns = HashSet::new();
    let copied: anyhow::Result<()> = async {
        while let Some(item) = stream.next().await {
            let h = ExportedPdq::try_from(item.map_err(rpc_error)?).context("the daemon sent a bad hash")?;
            takedowns.insert(h.takedown_id);
            w.write(&h)?;
        }
        Ok(())
    }
    .await;
    let finished = copied.and_then(|()| Ok(w.finish()?));
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
        args.client.print(&summary, |_| {
            eprintln!(
                "exported {written} hashes of {} takedowns to {}",
                takedowns.len(),
                out.display()
            )
        })?;
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
    /// Hashes whose takedown was already registered (updated, not added).
    pub already_present: u64,
    /// Hashes repeated further down the file.
    pub duplicates: u64,
    /// Rows of other signal types (te-csv).
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
    mut client: Client,
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
    let format = args.format.unwrap_or_else(|| FormatArg::from_path(&args.file));
    let parsed = parse(format.into(), file).with_context(|| format!("reading {}", args.file.display()))?;
    let client = args.client.connect().await?;
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
