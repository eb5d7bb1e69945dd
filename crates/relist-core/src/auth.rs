//! API keys and roles. A key is 32 random bytes shown once, as `rk_` + 64 hex characters;
//! only its SHA-256 is stored, in the sled trees:
//! - `api_keys`: key id (u64 BE) -> JSON [`KeyInfo`] (revoked keys are kept, marked);
//! - `api_key_hashes`: SHA-256 of the secret -> key id.
//!
//! While no key was ever created the daemon is open (development on loopback); once one
//! exists every request needs a live key, even when all keys are revoked later.
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sled::Transactional;

use crate::domain::now_ms;
use crate::error::{Error, Result};

/// What a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// CheckListing and CheckListings.
    Checker,
    /// RegisterTakedown, RemoveTakedown, GetTakedown for its own marketplace only.
    Writer,
    /// The match history: QueryMatches, GetMatch, MatchStats, ReviewMatch, the web page.
    Analyst,
    /// Everything, including key management.
    Admin,
}

impl Role {
    /// Every role, from the narrowest grant to the widest.
    pub const ALL: [Role; 4] = [Role::Checker, Role::Writer, Role::Analyst, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Checker => "checker",
            Role::Writer => "writer",
            Role::Analyst => "analyst",
            Role::Admin => "admin",
        }
    }

    /// Parses a role name as the CLI and the API spell it.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s.trim().to_lowercase())
    }
}

/// A stored key, without its secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyInfo {
    pub id: u64,
    pub name: String,
    pub role: Role,
    /// The only marketplace this key acts for (lowercase); `None` means all.
    pub marketplace: Option<String>,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

/// The groups of calls that roles are granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Check,
    WriteTakedowns,
    ReadHistory,
    ManageKeys,
    Backup,
}

impl Action {
    fn allowed(self, role: Role) -> bool {
        matches!(
            (self, role),
            (_, Role::Admin)
                | (Action::Check, Role::Checker)
                | (Action::WriteTakedowns, Role::Writer)
                | (Action::ReadHistory, Role::Analyst)
        )
    }

    fn name(self) -> &'static str {
        match self {
            Action::Check => "checking listings",
            Action::WriteTakedowns => "managing takedowns",
            Action::ReadHistory => "reading the match history",
            Action::ManageKeys => "managing API keys",
            Action::Backup => "taking backups",
        }
    }
}

/// Who is calling: nobody in particular while the daemon is open, or a key.
#[derive(Clone, Debug, PartialEq)]
pub enum Caller {
    /// No key exists yet: everything is allowed.
    Open,
    Key(KeyInfo),
}

impl Caller {
    /// PERMISSION_DENIED unless the caller's role may do `action`.
    pub fn require(&self, action: Action) -> Result<()> {
        match self {
            Caller::Open => Ok(()),
            Caller::Key(k) if action.allowed(k.role) => Ok(()),
            Caller::Key(k) => Err(Error::PermissionDenied(format!(
                "key {} has role {}, which does not allow {}",
                k.id,
                k.role.as_str(),
                action.name()
            ))),
        }
    }

    /// The one marketplace the caller is limited to, if any.
    pub fn scope(&self) -> Option<&str> {
        match self {
            Caller::Key(k) => k.marketplace.as_deref(),
            Caller::Open => None,
        }
    }

    /// PERMISSION_DENIED when the caller is scoped to another marketplace than `marketplace`.
    pub fn require_marketplace(&self, marketplace: &str) -> Result<()> {
        match self.scope() {
            Some(m) if !m.eq_ignore_ascii_case(marketplace.trim()) => Err(Error::PermissionDenied(format!(
                "this key acts for marketplace {m:?} only, not {:?}",
                marketplace.trim().to_lowercase()
            ))),
            _ => Ok(()),
        }
    }

    /// PERMISSION_DENIED when the caller is scoped and none of `marketplaces` is its own.
    pub fn require_any_marketplace<'a>(&self, marketplaces: impl IntoIterator<Item = &'a str>) -> Result<()> {
        let Some(m) = self.scope() else { return Ok(()) };
        if marketplaces.into_iter().any(|x| x.eq_ignore_ascii_case(m)) {
            Ok(())
        } else {
            Err(Error::PermissionDenied(format!(
                "this key sees marketplace {m:?}'s records only"
            )))
        }
    }
}

/// Prefix of every secret, so a leaked key is recognisable in logs and scanners.
pub const KEY_PREFIX: &str = "rk_";
const NAME_MAX_BYTES: usize = 128;
const MARKETPLACE_MAX_BYTES: usize = 64;

/// The key store.
#[derive(Clone)]
pub struct Keys {
    db: sled::Db,
    keys: sled::Tree,
    hashes: sled::Tree,
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

impl Keys {
    /// Opens the key trees in `db` (the bank's database).
    pub fn open(db: &sled::Db) -> Result<Keys> {
        Ok(Keys {
            db: db.clone(),
            keys: db.open_tree("api_keys")?,
            hashes: db.open_tree("api_key_hashes")?,
        })
    }

    /// True while no key was ever created: the daemon then runs open.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Creates a key; returns it with its secret, which is not stored and cannot be shown again.
    pub fn create(&self, role: Role, marketplace: Option<&str>, name: &str) -> Result<(KeyInfo, String)> {
        let (info, secret, hash) = Keys::prepare(self.db.generate_id()? + 1, role, marketplace, name)?;
        self.put(&info, Some(hash))?;
        self.db.flush()?;
        Ok((info, secret))
    }

    /// A new key `id` with its secret and the secret's hash, validated, not stored yet (a
    /// replica of a shared store stores it once the shared store has it, see [`Keys::put`]).
    pub fn prepare(id: u64, role: Role, marketplace: Option<&str>, name: &str) -> Result<(KeyInfo, String, [u8; 32])> {
        let marketplace = marketplace.map(|m| m.trim().to_lowercase()).filter(|m| !m.is_empty());
        if let Some(m) = &marketplace {
            if m.len() > MARKETPLACE_MAX_BYTES {
                return Err(Error::invalid("marketplace", "is over 64 bytes"));
            }
        }
        if role == Role::Writer && marketplace.is_none() {
            return Err(Error::invalid("marketplace", "is required for a writer key"));
        }
        if role == Role::Admin && marketplace.is_some() {
            return Err(Error::invalid(
                "marketplace",
                "an admin key cannot be limited to a marketplace",
            ));
        }
        if name.len() > NAME_MAX_BYTES {
            return Err(Error::invalid("name", "is over 128 bytes"));
        }
        let mut raw = [0u8; 32];
        getrandom::getrandom(&mut raw).map_err(|e| Error::Internal(format!("no randomness for a key: {e}")))?;
        let secret = format!("{KEY_PREFIX}{}", hex::encode(raw));
        let info = KeyInfo {
            id,
            name: name.to_string(),
            role,
            marketplace,
            created_at_ms: now_ms(),
            revoked_at_ms: None,
        };
        let hash = digest(&secret);
        Ok((info, secret, hash))
    }

    /// Stores a key record (and, for a new key, its secret's hash) as given: a new key, a
    /// revocation, or either made on another replica. Idempotent.
    pub fn put(&self, info: &KeyInfo, hash: Option<[u8; 32]>) -> Result<()> {
        let json = serde_json::to_vec(info).map_err(|e| Error::Internal(e.to_string()))?;
        (&self.keys, &self.hashes).transaction(|(keys, hashes)| {
            keys.insert(&info.id.to_be_bytes(), json.as_slice())?;
            if let Some(hash) = &hash {
                hashes.insert(hash, &info.id.to_be_bytes())?;
            }
            Ok::<_, sled::transaction::ConflictableTransactionError<Error>>(())
        })?;
        Ok(())
    }

    /// Every key, revoked ones included, oldest first.
    pub fn list(&self) -> Result<Vec<KeyInfo>> {
        self.keys
            .iter()
            .map(|kv| {
                let (_, v) = kv?;
                serde_json::from_slice(&v).map_err(|e| Error::Corrupt(format!("api key record: {e}")))
            })
            .collect()
    }

    /// One key.
    pub fn get(&self, id: u64) -> Result<Option<KeyInfo>> {
        self.keys
            .get(id.to_be_bytes())?
            .map(|v| serde_json::from_slice(&v).map_err(|e| Error::Corrupt(format!("api key {id}: {e}"))))
            .transpose()
    }

    /// Revokes a key at once; revoking twice keeps the first time.
    pub fn revoke(&self, id: u64) -> Result<KeyInfo> {
        let mut info = self.get(id)?.ok_or_else(|| Error::NotFound(format!("api key {id}")))?;
        if info.revoked_at_ms.is_none() {
            info.revoked_at_ms = Some(now_ms());
            let json = serde_json::to_vec(&info).map_err(|e| Error::Internal(e.to_string()))?;
            self.keys.insert(id.to_be_bytes(), json)?;
            self.db.flush()?;
        }
        Ok(info)
    }

    /// Who presents `authorization` (the header or metadata value, `Bearer <key>`).
    /// UNAUTHENTICATED for a missing, malformed, unknown or revoked key once keys exist.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Caller> {
        if self.is_empty() {
            return Ok(Caller::Open);
        }
        let value = authorization
            .ok_or_else(|| Error::Unauthenticated("an API key is required (authorization: Bearer <key>)".into()))?;
        let secret = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .ok_or_else(|| Error::Unauthenticated("authorization must be \"Bearer <key>\"".into()))?;
        self.authenticate_secret(secret)
    }

    /// Who holds the bare key `secret`.
    pub fn authenticate_secret(&self, secret: &str) -> Result<Caller> {
        if self.is_empty() {
            return Ok(Caller::Open);
        }
        let unknown = || Error::Unauthenticated("unknown or revoked API key".into());
        let id = self.hashes.get(digest(secret))?.ok_or_else(unknown)?;
        let id = <[u8; 8]>::try_from(id.as_ref())
            .map(u64::from_be_bytes)
            .map_err(|_| Error::Corrupt("api key hash index".into()))?;
        let info = self.get(id)?.ok_or_else(unknown)?;
        if info.revoked_at_ms.is_some() {
            return Err(unknown());
        }
        Ok(Caller::Key(info))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_authenticate_until_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let keys = Keys::open(&db).unwrap();
        assert_eq!(keys.authenticate(None).unwrap(), Caller::Open);
        let (info, secret) = keys.create(Role::Writer, Some(" Shopee "), "w").unwrap();
        assert_eq!(info.marketplace.as_deref(), Some("shopee"));
        assert!(secret.starts_with(KEY_PREFIX) && secret.len() == 67);
        let caller = keys.authenticate(Some(&format!("Bearer {secret}"))).unwrap();
        assert_eq!(caller, Caller::Key(info.clone()));
        assert!(caller.require(Action::WriteTakedowns).is_ok());
        assert!(matches!(caller.require(Action::Check), Err(Error::PermissionDenied(_))));
        assert!(caller.require_marketplace("SHOPEE").is_ok());
        assert!(matches!(
            caller.require_marketplace("lazada"),
            Err(Error::PermissionDenied(_))
        ));
        assert!(matches!(keys.authenticate(None), Err(Error::Unauthenticated(_))));
        assert!(matches!(
            keys.authenticate(Some(&secret)),
            Err(Error::Unauthenticated(_))
        ));
        assert!(matches!(
            keys.authenticate(Some("Bearer rk_00")),
            Err(Error::Unauthenticated(_))
        ));
        keys.revoke(info.id).unwrap();
        assert!(matches!(
            keys.authenticate(Some(&format!("Bearer {secret}"))),
            Err(Error::Unauthenticated(_))
        ));
        assert_eq!(keys.list().unwrap().len(), 1);
        assert!(matches!(
            keys.create(Role::Writer, None, ""),
            Err(Error::InvalidArgument { .. })
        ));
    }
}
