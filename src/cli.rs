//! The `relist` command tree: the daemon (`serve`) and the client commands that talk to it
//! over gRPC, each in its own file under [`crate::cmd`]. Every client command takes `--json`.
use std::io::IsTerminal;

use clap::{Parser, Subcommand};

use crate::cmd;

#[derive(Debug, Parser)]
#[command(
    name = "relist",
    version,
    about = "Remembers taken-down listings and catches their re-uploads"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC daemon on an embedded sled store.
    Serve(cmd::serve::ServeArgs),
    /// Register, remove or show taken-down listings.
    #[command(subcommand)]
    Takedown(cmd::takedown::TakedownCommand),
    /// Check whether a listing is a re-upload of a taken-down one; the exit status tells the
    /// verdict (0 CLEAR, 3 REVIEW, 4 REUPLOAD, 1 error).
    #[command(after_help = cmd::check::EXIT_CODES_HELP)]
    Check(cmd::check::CheckArgs),
    /// Search the match history (newest first); CSV and JSON export stream.
    History(cmd::history::HistoryArgs),
    /// Match statistics over a time range (by default the last 30 days).
    Stats(cmd::history::StatsArgs),
    /// Show a recorded match with its reviews.
    #[command(subcommand)]
    Match(cmd::matches::MatchCommand),
    /// Label a recorded match as confirmed or false-positive (or take a label back).
    Review(cmd::review::ReviewArgs),
    /// Re-check a whole catalog (JSON Lines or CSV) and write one result row per listing;
    /// resumable, bounded memory. See `relist batch --help` for the formats.
    #[command(after_long_help = cmd::batch::FORMATS_HELP)]
    Batch(cmd::batch::BatchArgs),
    /// Create, list or revoke API keys (admin). Through the daemon, or with --data-dir
    /// directly on a stopped daemon's store (how the first admin key is made).
    #[command(subcommand)]
    Keys(cmd::keys::KeysCommand),
    /// Write a consistent backup of the running daemon's whole store to FILE (admin).
    Backup(cmd::backup::BackupArgs),
    /// Restore a backup into a new, empty data dir (offline).
    Restore(cmd::backup::RestoreArgs),
    /// Measure detection quality on photos and/or titles with generated evasions; see
    /// `relist eval --help`.
    #[cfg(feature = "eval")]
    Eval(crate::eval::EvalArgs),
    /// Write the bank's PDQ hashes for other platforms: hex lines or ThreatExchange CSV.
    Export(cmd::exchange::ExportArgs),
    /// Register a shared hash list (hex lines or ThreatExchange CSV) as hash-only takedowns.
    Import(cmd::exchange::ImportArgs),
}

/// Runs a parsed command line; the exit status on success is 0 except for `check`,
/// whose status tells the verdict.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    init_tracing();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let ok = |()| 0;
        match cli.command {
            Command::Check(args) => cmd::check::run(args).await,
            Command::Serve(args) => cmd::serve::run(args).await.map(ok),
            Command::Takedown(c) => cmd::takedown::run(c).await.map(ok),
            Command::History(args) => cmd::history::run(args).await.map(ok),
            Command::Stats(args) => cmd::history::run_stats(args).await.map(ok),
            Command::Match(c) => cmd::matches::run(c).await.map(ok),
            Command::Review(args) => cmd::review::run(args).await.map(ok),
            Command::Batch(args) => cmd::batch::run(args).await.map(ok),
            Command::Keys(c) => cmd::keys::run(c).await.map(ok),
            Command::Backup(args) => cmd::backup::run_backup(args).await.map(ok),
            Command::Restore(args) => cmd::backup::run_restore(args).map(ok),
            #[cfg(feature = "eval")]
            Command::Eval(args) => tokio::task::spawn_blocking(move || crate::eval::run(args))
                .await?
                .map(ok),
            Command::Export(args) => cmd::exchange::run_export(args).await.map(ok),
            Command::Import(args) => cmd::exchange::run_import(args).await.map(ok),
        }
    })
}

/// Logs to stderr, filtered by `RELIST_LOG` (default `info`).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RELIST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
