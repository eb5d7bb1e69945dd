//! `relist stats`: match counts over a time range (per day, marketplace, verdict; the most
//! re-listed takedowns and the sellers with the most matches).
use clap::Args;
use relist_core::history::Stats;
use relist_proto::api::{self, pb};

use crate::client::{parse_time, print_json, rpc_error, ClientArgs};

/// `relist stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Start of the range (RFC 3339 or YYYY-MM-DD) [default: 30 days ago].
    #[arg(long)]
    pub from: Option<String>,
    /// End of the range, exclusive [default: now].
    #[arg(long)]
    pub to: Option<String>,
    /// How many top takedowns and sellers.
    #[arg(long, default_value_t = 10)]
    pub top: u32,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Runs `relist stats`.
pub async fn run(args: StatsArgs) -> anyhow::Result<()> {
    let now = relist_core::domain::now_ms();
    let req = pb::MatchStatsRequest {
        from: Some(match &args.from {
            Some(s) => parse_time("--from", s)?,
            None => api::timestamp(now - 30 * 86_400_000),
        }),
        to: Some(match &args.to {
            Some(s) => parse_time("--to", s)?,
            None => api::timestamp(now + 1),
        }),
        top: args.top,
    };
    let resp = args
        .client
        .connect()
        .await?
        .match_stats(req)
        .await
        .map_err(rpc_error)?
        .into_inner();
    let s = Stats::from(resp);
    if args.client.json {
        return print_json(&s);
    }
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
    Ok(())
}
