//! `relist backup` and `relist restore`: a consistent copy of the running daemon's store,
//! and its restore into a new data dir. The file format is relist-core's [`relist_core::backup`].
use std::io::Write;
use std::path::Path;

use relist_core::backup::{read_header as read_backup_header, restore, BackupHeader};
use relist_proto::api::pb;

use crate::client::{part_path, print_json, rpc_error, Client, ClientArgs};

/// `relist backup FILE`: takes a backup through the daemon (admin key).
#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// Where to write the backup; written beside it first, then renamed, so an interrupted
    /// backup never leaves a partial FILE.
    pub file: std::path::PathBuf,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `relist restore FILE --data-dir DIR`: restores a backup into a new data dir (offline).
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The backup file (from `relist backup`).
    pub file: std::path::PathBuf,
    /// The data dir to create; it must not exist or be empty.
    #[arg(long)]
    pub data_dir: std::path::PathBuf,
    /// Print machine-readable JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `relist backup`.
pub async fn run_backup(args: BackupArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    use futures::StreamExt;
    let backup = |mut c: Client| async move { c.backup(pb::BackupRequest {}).await };
    let mut stream = args.client.call(backup).await?;
    let part = part_path(&args.file);
    let mut out =
        std::io::BufWriter::new(std::fs::File::create(&part).with_context(|| format!("creating {}", part.display()))?);
    let mut bytes = 0u64;
    let copied: anyhow::Result<()> = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(rpc_error)?;
            out.write_all(&chunk.data)?;
            bytes += chunk.data.len() as u64;
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(())
    }
    .await;
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&part);
        return Err(e.context("backup interrupted; nothing was written"));
    }
    // Check what arrived before calling it a backup.
    let header = read_header(&part)?;
    std::fs::rename(&part, &args.file).with_context(|| format!("renaming to {}", args.file.display()))?;
    let summary = serde_json::json!({ "file": args.file, "bytes": bytes, "header": header });
    args.client.print(&summary, |_| {
        println!(
            "backup written to {} ({bytes} bytes, schema version {})",
            args.file.display(),
            header.schema_version
        )
    })
}

fn read_header(path: &Path) -> anyhow::Result<BackupHeader> {
    use anyhow::Context;
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    read_backup_header(file).context("the daemon sent something that is not a relist backup")
}

/// Runs `relist restore`.
pub fn run_restore(args: RestoreArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let file = std::fs::File::open(&args.file).with_context(|| format!("opening {}", args.file.display()))?;
    let summary = restore(file, &args.data_dir)
        .with_context(|| format!("restoring {} into {}", args.file.display(), args.data_dir.display()))?;
    if args.json {
        return print_json(&summary);
    }
    println!(
        "restored {} entries in {} trees (schema version {}) into {}",
        summary.entries,
        summary.trees,
        summary.schema_version,
        args.data_dir.display()
    );
    Ok(())
}
