//! `relist takedown add|remove|get|list`: register a taken-down listing, reverse one, show one,
//! list them (all, one marketplace's, or the one for a marketplace's listing id).
use anyhow::Context;
use clap::Subcommand;
use relist_core::domain::{ListingFingerprints, Registered, Takedown};
use relist_core::history::MAX_PAGE_SIZE;
use relist_proto::api::{self, pb};

use crate::client::{fmt_ms, rpc_error, Client, ClientArgs, ListingArgs};

// Parsed once per process: the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum TakedownCommand {
    /// Register a taken-down listing (again: updates it).
    Add {
        #[command(flatten)]
        listing: ListingArgs,
        /// Why it was taken down.
        #[arg(long, default_value = "")]
        reason: String,
        /// When it was taken down, RFC 3339 (e.g. 2023-04-01T10:00:00Z) [default: now].
        #[arg(long)]
        taken_down_at: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Reverse a takedown (e.g. after an appeal); it stops matching at once.
    Remove {
        /// The takedown's id (as `takedown add` printed it).
        takedown_id: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a stored takedown.
    Get {
        /// The takedown's id (as `takedown add` printed it).
        takedown_id: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List stored takedowns in id order; with --marketplace and --listing-id, find the one
    /// registered for that listing. --json prints one JSON object a line.
    List {
        /// Only this marketplace's takedowns.
        #[arg(long)]
        marketplace: Option<String>,
        /// Only the takedown registered for this listing id (needs --marketplace).
        #[arg(long, requires = "marketplace")]
        listing_id: Option<String>,
        /// Removed takedowns too (by default only live ones).
        #[arg(long)]
        include_removed: bool,
        /// At most this many takedowns; 0 for all.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Runs `relist takedown add|remove|get|list`.
pub async fn run(cmd: TakedownCommand) -> anyhow::Result<()> {
    match cmd {
        TakedownCommand::Add {
            listing,
            reason,
            taken_down_at,
            client,
        } => {
            let taken_down_at = match taken_down_at {
                Some(s) => {
                    let t = humantime::parse_rfc3339_weak(&s).with_context(|| format!("--taken-down-at {s}"))?;
                    let d = t
                        .duration_since(std::time::UNIX_EPOCH)
                        .context("--taken-down-at before 1970")?;
                    Some(api::timestamp(d.as_millis() as i64))
                }
                None => None,
            };
            let req = pb::RegisterTakedownRequest {
                listing: Some(listing.to_proto()?),
                reason,
                taken_down_at,
            };
            let register = |mut c: Client| async move { c.register_takedown(req).await };
            client.show(register, print_registered).await?;
        }
        TakedownCommand::Remove { takedown_id, client } => {
            let req = pb::RemoveTakedownRequest { takedown_id };
            let resp = client.call(|mut c| async move { c.remove_takedown(req).await }).await?;
            let at = resp.removed_at.map(|t| {
                t.seconds
                    .saturating_mul(1000)
                    .saturating_add(i64::from(t.nanos / 1_000_000))
            });
            client.print(
                &serde_json::json!({ "takedown_id": takedown_id, "removed_at_ms": at }),
                |_| println!("takedown {takedown_id} removed at {}", fmt_ms(at.unwrap_or(0))),
            )?;
        }
        TakedownCommand::Get { takedown_id, client } => {
            let req = pb::GetTakedownRequest { takedown_id };
            let resp = client.call(|mut c| async move { c.get_takedown(req).await }).await?;
            client.print(&Takedown::from(resp.takedown.unwrap_or_default()), print_takedown)?;
        }
        TakedownCommand::List {
            marketplace,
            listing_id,
            include_removed,
            limit,
            client,
        } => {
            let mut req = pb::ListTakedownsRequest {
                marketplace: marketplace.unwrap_or_default(),
                listing_id: listing_id.unwrap_or_default(),
                include_removed,
                page_size: MAX_PAGE_SIZE as u32,
                page_token: String::new(),
            };
            let mut c = client.connect().await?;
            let mut written = 0usize;
            // One page in memory at a time, as `history` does.
            loop {
                if limit > 0 {
                    req.page_size = req.page_size.min((limit - written) as u32);
                }
                let page = c.list_takedowns(req.clone()).await.map_err(rpc_error)?.into_inner();
                for t in page.takedowns {
                    let t = Takedown::from(t);
                    if client.json {
                        println!("{}", serde_json::to_string(&t)?);
                    } else {
                        print_takedown_row(&t);
                    }
                    written += 1;
                }
                if page.next_page_token.is_empty() || (limit > 0 && written >= limit) {
                    break;
                }
                req.page_token = page.next_page_token;
            }
            if written == 0 && !client.json {
                eprintln!("no takedowns");
            }
        }
    }
    Ok(())
}

/// One line of `takedown list`.
fn print_takedown_row(t: &Takedown) {
    let removed = t
        .removed_at_ms
        .map(|at| format!("  REMOVED {}", fmt_ms(at)))
        .unwrap_or_default();
    println!(
        "{:>8}  {}/{}  seller {:?}  taken down {}  {}{removed}",
        t.id,
        t.listing.marketplace,
        t.listing.listing_id,
        t.listing.seller_id,
        fmt_ms(t.taken_down_at_ms),
        t.listing.title
    );
}

fn print_fingerprints(f: &ListingFingerprints) {
    for (i, img) in f.images.iter().enumerate() {
        println!(
            "  image {i}: pdq {} (quality {}), phash {}",
            img.pdq.map(|p| p.to_hex()).unwrap_or_else(|| "-".into()),
            img.pdq_quality,
            img.phash.map(|h| format!("{h:016x}")).unwrap_or_else(|| "-".into()),
        );
    }
    println!(
        "  title: simhash {} of \"{}\"",
        f.title_simhash
            .map(|h| format!("{h:016x}"))
            .unwrap_or_else(|| "-".into()),
        f.normalized_title
    );
}

fn print_registered(r: &Registered) {
    let what = if r.updated { "updated" } else { "registered" };
    println!("takedown {} {what}", r.takedown_id);
    print_fingerprints(&r.fingerprints);
}

fn print_takedown(t: &Takedown) {
    println!(
        "takedown {}: {}/{} seller {:?}",
        t.id, t.listing.marketplace, t.listing.listing_id, t.listing.seller_id
    );
    println!("  title: {}", t.listing.title);
    println!("  reason: {}", t.reason);
    println!(
        "  taken down {}, registered {}",
        fmt_ms(t.taken_down_at_ms),
        fmt_ms(t.registered_at_ms)
    );
    if let Some(at) = t.removed_at_ms {
        println!("  REMOVED at {} (no longer matches)", fmt_ms(at));
    }
    print_fingerprints(&t.fingerprints);
}
