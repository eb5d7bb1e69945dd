//! `relist keys create|list|revoke`: API key management. Through the daemon's admin RPCs
//! (`--addr`, `--api-key`), or with `--data-dir` straight on the store of a stopped daemon
//! (sled allows one process at a time), which is how the first admin key comes to exist.
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};

use relist_core::auth::{KeyInfo, Keys, Role};
use relist_proto::api::pb;

use crate::client::{fmt_ms, ClientArgs};

/// A key's role on the command line (see [`Role`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RoleArg {
    /// CheckListing and CheckListings.
    Checker,
    /// RegisterTakedown, RemoveTakedown, GetTakedown for its own marketplace only.
    Writer,
    /// The match history: QueryMatches, GetMatch, MatchStats, ReviewMatch, the web page.
    Analyst,
    /// Everything, including key management.
    Admin,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Checker => Role::Checker,
            RoleArg::Writer => Role::Writer,
            RoleArg::Analyst => Role::Analyst,
            RoleArg::Admin => Role::Admin,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print its secret (shown this once only).
    Create {
        /// What the key may do.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// The one marketplace the key acts for (required for writers; optional for checkers
        /// and analysts).
        #[arg(long)]
        marketplace: Option<String>,
        /// Who holds the key.
        #[arg(long, default_value = "")]
        name: String,
        #[command(flatten)]
        target: KeysTarget,
    },
    /// List keys, revoked ones included (never their secrets).
    List {
        #[command(flatten)]
        target: KeysTarget,
    },
    /// Revoke a key at once.
    Revoke {
        /// The key's id (from `keys list`).
        key_id: u64,
        #[command(flatten)]
        target: KeysTarget,
    },
}

/// Where the keys are: a stopped daemon's data dir, or a running daemon.
#[derive(Debug, Args)]
pub struct KeysTarget {
    /// Work on this data dir directly (the daemon must be stopped) instead of over gRPC.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub client: ClientArgs,
}

fn open_offline(dir: &Path) -> anyhow::Result<Keys> {
    let store = relist_core::store::Store::open(dir).with_context(|| {
        format!(
            "opening {} (is the daemon running? then use --addr with an admin --api-key)",
            dir.display()
        )
    })?;
    Ok(Keys::open(store.db())?)
}

/// Runs a `relist keys` command.
pub async fn run(cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Create {
            role,
            marketplace,
            name,
            target,
        } => {
            let role = Role::from(role);
            let (info, secret) = match &target.data_dir {
                Some(dir) => open_offline(dir)?.create(role, marketplace.as_deref(), &name)?,
                None => {
                    let req = pb::CreateKeyRequest {
                        role: role.as_str().to_string(),
                        marketplace: marketplace.unwrap_or_default(),
                        name,
                    };
                    let resp = target
                        .client
                        .call(|mut c| async move { c.create_key(req).await })
                        .await?;
                    (KeyInfo::try_from(resp.key.unwrap_or_default())?, resp.secret)
                }
            };
            target
                .client
                .print(&serde_json::json!({ "key": info, "secret": secret }), |_| {
                    println!("{secret}");
                    eprintln!(
                        "key {} ({}) created; the line above is its secret, shown only now",
                        info.id,
                        describe(&info)
                    );
                })
        }
        KeysCommand::List { target } => {
            let keys = match &target.data_dir {
                Some(dir) => open_offline(dir)?.list()?,
                None => target
                    .client
                    .call(|mut c| async move { c.list_keys(pb::ListKeysRequest {}).await })
                    .await?
                    .keys
                    .into_iter()
                    .map(KeyInfo::try_from)
                    .collect::<Result<Vec<_>, _>>()?,
            };
            target.client.print(&keys, |keys| {
                for k in keys {
                    let state = match k.revoked_at_ms {
                        Some(at) => format!("REVOKED {}", fmt_ms(at)),
                        None => "active".to_string(),
                    };
                    println!(
                        "{:>6}  {:<32} created {}  {state}  {:?}",
                        k.id,
                        describe(k),
                        fmt_ms(k.created_at_ms),
                        k.name
                    );
                }
            })
        }
        KeysCommand::Revoke { key_id, target } => {
            let info = match &target.data_dir {
                Some(dir) => open_offline(dir)?.revoke(key_id)?,
                None => KeyInfo::try_from(
                    target
                        .client
                        .call(|mut c| async move { c.revoke_key(pb::RevokeKeyRequest { key_id }).await })
                        .await?,
                )?,
            };
            target
                .client
                .print(&info, |info| println!("key {} ({}) revoked", info.id, describe(info)))
        }
    }
}

fn describe(k: &KeyInfo) -> String {
    match &k.marketplace {
        Some(m) => format!("{} of {m}", k.role.as_str()),
        None => k.role.as_str().to_string(),
    }
}
