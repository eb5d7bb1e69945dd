//! `relist history` and `relist stats`: the match history listed (newest first, as a table,
//! CSV or JSON Lines; one page in memory at a time, so a year of history exports in constant
//! memory) and counted (per day, marketplace, verdict; the most re-listed takedowns and the
//! sellers with the most matches).
use clap::Args;
use relist_core::history::{MatchView, Stats, MAX_PAGE_SIZE};
use relist_proto::api::{self, pb};

use crate::client::{connect, fmt_ms, parse_time, rpc_error, Client, ClientArgs, ConnArgs};

/// Output format of `relist history`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum HistoryFormat {
    Table,
    Csv,
    Json,
}

/// A review label on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LabelArg {
    Confirmed,
    FalsePositive,
    Unreviewed,
}

impl LabelArg {
    pub(crate) fn to_proto(self) -> pb::ReviewLabel {
        match self {
            LabelArg::Confirmed => pb::ReviewLabel::Confirmed,
            LabelArg::FalsePositive => pb::ReviewLabel::FalsePositive,
            LabelArg::Unreviewed => pb::ReviewLabel::Unreviewed,
        }
    }
}

/// A verdict filter on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum VerdictArg {
    Review,
    Reupload,
}

/// A source filter on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceArg {
    Upload,
    Batch,
}

/// The time range of `relist history` and `relist stats`.
#[derive(Debug, Args)]
pub struct TimeRange {
    /// Start of the range, inclusive: RFC 3339, or YYYY-MM-DD for midnight UTC.
    #[arg(long)]
    pub from: Option<String>,
    /// End of the range, exclusive: RFC 3339, or YYYY-MM-DD.
    #[arg(long)]
    pub to: Option<String>,
}

impl TimeRange {
    /// `--from` as a timestamp, when given.
    pub fn from(&self) -> anyhow::Result<Option<prost_types::Timestamp>> {
        self.from.as_deref().map(|s| parse_time("--from", s)).transpose()
    }

    /// `--to` as a timestamp, when given.
    pub fn to(&self) -> anyhow::Result<Option<prost_types::Timestamp>> {
        self.to.as_deref().map(|s| parse_time("--to", s)).transpose()
    }
}

/// `relist history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub range: TimeRange,
    /// Only records matching this takedown.
    #[arg(long)]
    pub takedown: Option<u64>,
    /// Only records involving this marketplace (candidate's or taken-down listing's).
    #[arg(long)]
    pub marketplace: Option<String>,
    /// Only records involving this seller (candidate's or taken-down listing's).
    #[arg(long)]
    pub seller: Option<String>,
    /// Only matches with this verdict.
    #[arg(long, value_enum)]
    pub verdict: Option<VerdictArg>,
    /// Only records with at least this score (0-1).
    #[arg(long)]
    pub min_score: Option<f64>,
    /// Only matches whose latest review label is this (unreviewed: none yet).
    #[arg(long, value_enum)]
    pub label: Option<LabelArg>,
    /// Only matches recorded by upload-time checks or by batch re-checks.
    #[arg(long, value_enum)]
    pub source: Option<SourceArg>,
    /// At most this many records; 0 for all.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Output: a table for people, or CSV / JSON Lines (streamed) for files and scripts.
    #[arg(long, value_enum, default_value = "table")]
    pub format: HistoryFormat,
    /// JSON Lines, as every client command's --json (the same as --format json).
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// Address of the relist daemon: host:port as `relist serve` prints it, or a URL.
    #[arg(long, env = "RELIST_ADDR", default_value = "127.0.0.1:50051")]
    pub addr: String,
    #[command(flatten)]
    pub conn: ConnArgs,
}

const HISTORY_CSV_HEADER: [&str; 14] = [
    "match_id",
    "time",
    "source",
    "verdict",
    "score",
    "label",
    "candidate_marketplace",
    "candidate_listing_id",
    "candidate_seller_id",
    "candidate_title",
    "takedown_id",
    "takedown_marketplace",
    "takedown_listing_id",
    "takedown_seller_id",
];

/// Runs `relist history`.
pub async fn run(args: HistoryArgs) -> anyhow::Result<()> {
    let mut req = pb::QueryMatchesRequest {
        from: args.range.from()?,
        to: args.range.to()?,
        takedown_id: args.takedown.unwrap_or(0),
        marketplace: args.marketplace.unwrap_or_default(),
        seller_id: args.seller.unwrap_or_default(),
        verdict: match args.verdict {
            Some(VerdictArg::Review) => pb::Verdict::Review as i32,
            Some(VerdictArg::Reupload) => pb::Verdict::Reupload as i32,
            None => 0,
        },
        min_score: args.min_score.unwrap_or(0.0),
        label: args.label.map_or(0, |l| l.to_proto() as i32),
        source: match args.source {
            Some(SourceArg::Upload) => pb::Source::Upload as i32,
            Some(SourceArg::Batch) => pb::Source::Batch as i32,
            None => 0,
        },
        page_size: MAX_PAGE_SIZE as u32,
        page_token: String::new(),
    };
    let mut client = connect(&args.addr, &args.conn.connection()).await?;
    let stdout = std::io::stdout();
    let format = if args.json { HistoryFormat::Json } else { args.format };
    let mut csv_out = (format == HistoryFormat::Csv).then(|| csv::Writer::from_writer(stdout.lock()));
    if let Some(w) = csv_out.as_mut() {
        w.write_record(HISTORY_CSV_HEADER)?;
    }
    let mut written = 0usize;
    // One page in memory at a time: a year of history exports in constant memory.
    loop {
        if args.limit > 0 {
            req.page_size = req.page_size.min((args.limit - written) as u32);
        }
        let page = client.query_matches(req.clone()).await.map_err(rpc_error)?.into_inner();
        for rec in page.records {
            let v = MatchView::from(rec);
            match (&mut csv_out, format) {
                (Some(w), _) => {
                    let r = &v.record;
                    let best = r.matches.first();
                    w.write_record([
                        r.match_id.to_string(),
                        fmt_ms(r.at_ms),
                        format!("{:?}", r.source).to_lowercase(),
                        r.verdict.as_str().to_string(),
                        format!("{:.4}", r.score),
                        v.label.as_str().to_string(),
                        r.candidate.marketplace.clone(),
                        r.candidate.listing_id.clone(),
                        r.candidate.seller_id.clone(),
                        r.candidate.title.clone(),
                        best.map(|m| m.takedown_id.to_string()).unwrap_or_default(),
                        best.map(|m| m.marketplace.clone()).unwrap_or_default(),
                        best.map(|m| m.listing_id.clone()).unwrap_or_default(),
                        best.map(|m| m.seller_id.clone()).unwrap_or_default(),
                    ])?;
                }
                (None, HistoryFormat::Json) => println!("{}", serde_json::to_string(&v)?),
                (None, _) => {
                    let r = &v.record;
                    let best = r
                        .matches
                        .first()
                        .map(|m| {
                            format!(
                                "takedown {} ({}/{} seller {:?})",
                                m.takedown_id, m.marketplace, m.listing_id, m.seller_id
                            )
                        })
                        .unwrap_or_default();
                    println!(
                        "{:>20}  {}  {:<6} {:<8} {:.3}  {:<14} {}/{} seller {:?} -> {best}",
                        r.match_id,
                        fmt_ms(r.at_ms),
                        format!("{:?}", r.source).to_lowercase(),
                        r.verdict.as_str(),
                        r.score,
                        v.label.as_str(),
                        r.candidate.marketplace,
                        r.candidate.listing_id,
                        r.candidate.seller_id,
                    );
                }
            }
            written += 1;
        }
        if let Some(w) = csv_out.as_mut() {
            w.flush()?;
        }
        if page.next_page_token.is_empty() || (args.limit > 0 && written >= args.limit) {
            break;
        }
        req.page_token = page.next_page_token;
    }
    Ok(())
}

/// `relist stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    pub range: TimeRange,
    /// How many top takedowns and sellers.
    #[arg(long, default_value_t = 10)]
    pub top: u32,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Runs `relist stats`.
pub async fn run_stats(args: StatsArgs) -> anyhow::Result<()> {
    let now = relist_core::domain::now_ms();
    let req = pb::MatchStatsRequest {
        from: Some(
            args.range
                .from()?
                .unwrap_or_else(|| api::timestamp(now - 30 * 86_400_000)),
        ),
        to: Some(args.range.to()?.unwrap_or_else(|| api::timestamp(now + 1))),
        top: args.top,
    };
    let stats = |mut c: Client| async move { c.match_stats(req).await };
    args.client.show(stats, print_stats).await
}

fn print_stats(s: &Stats) {
    println!("{} matches", s.total);
    let section = |title: &str, rows: &[(String, u64)]| {
        println!("{title}:");
        for (name, n) in rows {
            println!("  {n:>8}  {name}");
        }
    };
    section("per day", &s.per_day);
    section("per marketplace", &s.per_marketplace);
    section("per verdict", &s.per_verdict);
    println!("most re-listed takedowns:");
    for (id, n) in &s.top_takedowns {
        println!("  {n:>8}  takedown {id}");
    }
    section("sellers with the most matches", &s.top_sellers);
}
