//! `relist check`: is this listing a re-upload of a taken-down one?
use clap::Args;
use relist_core::domain::{CheckOutcome, Match, Verdict};
use relist_proto::api::pb;

use crate::client::{Client, ClientArgs, ListingArgs};

/// `relist check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub listing: ListingArgs,
    /// Answer without recording the result in the match history (same verdict, no match id).
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// How `relist check` exits, so scripts can branch on the verdict as on grep's status; a
/// failed check (1) and a usage error (2, from clap) stay distinct from every verdict.
pub const EXIT_CODES_HELP: &str = "Exit status: 0 CLEAR, 3 REVIEW, 4 REUPLOAD; 1 the check failed (daemon \
unreachable, refused, bad input); 2 usage error.";

/// The exit status of a verdict (see [`EXIT_CODES_HELP`]).
pub fn exit_code(v: Verdict) -> u8 {
    match v {
        Verdict::Clear => 0,
        Verdict::Review => 3,
        Verdict::Reupload => 4,
    }
}

/// Runs `relist check`; the exit status tells the verdict.
pub async fn run(args: CheckArgs) -> anyhow::Result<u8> {
    let req = pb::CheckListingRequest {
        listing: Some(args.listing.to_proto()?),
        dry_run: args.dry_run,
    };
    let check = |mut c: Client| async move { c.check_listing(req).await };
    let outcome = CheckOutcome::from(args.client.call(check).await?);
    args.client.print(&outcome, print_check)?;
    Ok(exit_code(outcome.verdict))
}

fn print_check(c: &CheckOutcome) {
    match c.match_id {
        Some(id) => println!("{}  score {:.3}  (recorded as match {id})", c.verdict.as_str(), c.score),
        None => println!("{}", c.verdict.as_str()),
    }
    if c.bank_stale {
        println!("  (bank may be stale: this replica has not reached the shared store lately)");
    }
    for m in &c.matches {
        print_matched_takedown(m);
        for e in &m.images {
            let kind = e.kind.name();
            let transform = e.transform.map(|t| format!(" ({})", t.name())).unwrap_or_default();
            println!(
                "    image {} ~ stored image {}: {kind} distance {}{transform}",
                e.candidate_image_index, e.stored_image_index, e.distance
            );
        }
        if let Some(d) = m.text_distance {
            println!("    title distance {d}");
        }
    }
}

/// One matched takedown of a check or a recorded match, as a line.
pub(crate) fn print_matched_takedown(m: &Match) {
    let same = if m.same_seller { "  [same seller]" } else { "" };
    println!(
        "  {} takedown {}: {}/{} seller {:?}  score {:.3}{same}",
        m.verdict.as_str(),
        m.takedown_id,
        m.marketplace,
        m.listing_id,
        m.seller_id,
        m.score
    );
}
