//! `relist review`: label a recorded match confirmed or false-positive (or take a label back).
use clap::Args;
use relist_core::history::MatchView;
use relist_proto::api::pb;

use super::history::LabelArg;
use crate::client::{Client, ClientArgs};

/// `relist review`.
#[derive(Debug, Args)]
pub struct ReviewArgs {
    /// The match's id (from `check` or `history`).
    pub match_id: u64,
    /// The label; `unreviewed` takes the previous label back.
    #[arg(long, value_enum)]
    pub label: LabelArg,
    /// A free-text note kept with the label (why).
    #[arg(long, default_value = "")]
    pub note: String,
    /// Who reviews.
    #[arg(long, env = "RELIST_REVIEWER")]
    pub reviewer: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Runs `relist review`.
pub async fn run(args: ReviewArgs) -> anyhow::Result<()> {
    let req = pb::ReviewMatchRequest {
        match_id: args.match_id,
        label: args.label.to_proto() as i32,
        reviewer: args.reviewer,
        note: args.note,
    };
    let review = |mut c: Client| async move { c.review_match(req).await };
    args.client.show(review, print_review).await
}

fn print_review(v: &MatchView) {
    println!(
        "match {} is now {} ({} reviews)",
        v.record.match_id,
        v.label.as_str(),
        v.reviews.len()
    );
}
