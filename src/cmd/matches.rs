//! `relist match get`: one recorded match (as `check` or `history` named it) with its
//! evidence and every review.
use clap::Subcommand;
use relist_core::history::MatchView;
use relist_proto::api::pb;

use crate::client::{fmt_ms, Client, ClientArgs};

#[derive(Debug, Subcommand)]
pub enum MatchCommand {
    /// Show one recorded match: the candidate, the takedowns it matched, every review.
    Get {
        /// The match's id (from `check` or `history`).
        match_id: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Runs `relist match get`.
pub async fn run(cmd: MatchCommand) -> anyhow::Result<()> {
    match cmd {
        MatchCommand::Get { match_id, client } => {
            let req = pb::GetMatchRequest { match_id };
            let get = |mut c: Client| async move { c.get_match(req).await };
            client.show(get, print_match).await
        }
    }
}

fn print_match(v: &MatchView) {
    let r = &v.record;
    println!(
        "match {}: {}  score {:.3}  {}  ({}, {})",
        r.match_id,
        r.verdict.as_str(),
        r.score,
        v.label.as_str(),
        format!("{:?}", r.source).to_lowercase(),
        fmt_ms(r.at_ms)
    );
    let c = &r.candidate;
    println!(
        "  candidate {}/{} seller {:?}: {}",
        c.marketplace, c.listing_id, c.seller_id, c.title
    );
    for m in &r.matches {
        super::check::print_matched_takedown(m);
    }
    if v.reviews.is_empty() {
        println!("  no reviews");
    }
    for rev in &v.reviews {
        let note = if rev.note.is_empty() {
            String::new()
        } else {
            format!(": {}", rev.note)
        };
        println!(
            "  reviewed {} by {} at {}{note}",
            rev.label.as_str(),
            rev.reviewer,
            fmt_ms(rev.at_ms)
        );
    }
}
