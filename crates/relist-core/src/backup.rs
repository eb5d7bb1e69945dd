//! Online backups of the whole sled store (takedowns, history, API keys) and their restore
//! into an empty data dir.
//!
//! The file: `RELIST-BACKUP\n`, a big-endian u32 length and a JSON [`BackupHeader`] (with the
//! store's schema version), then every tree as `T` + name and `E` + key + value records
//! (each byte string a u32 length and the bytes), then `Z` and the xxh3-64 of everything
//! before it. Restore checks the checksum and the schema version before it keeps anything: a
//! newer schema is refused, an older one is upgraded when the daemon opens the restored store.
//!
//! sled hands out ids from a counter that is not in any tree, so the header carries the
//! counter's value (`id_floor`) and restore advances the new store's counter past it: a
//! restored bank never reuses an id.
use std::io::{Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

use crate::error::{Error, Result};
use crate::store::SCHEMA_VERSION;

const MAGIC: &[u8] = b"RELIST-BACKUP\n";
/// Version of the backup file layout (not of the store, which is `schema_version`).
pub const FORMAT: u32 = 1;
/// Refuse to replay an id counter beyond this (a corrupt header, not a real store).
const MAX_ID_FLOOR: u64 = 1 << 36;

/// What a backup says about itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackupHeader {
    /// The file layout's version ([`FORMAT`]).
    pub format: u32,
    /// The store's [`SCHEMA_VERSION`] when it was taken.
    pub schema_version: u32,
    /// When it was taken (Unix ms).
    pub created_at_ms: i64,
    /// Every id the source store had handed out is below this.
    pub id_floor: u64,
}

/// Counts of what a backup holds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BackupSummary {
    /// The store's schema version in the backup.
    pub schema_version: u32,
    /// sled trees copied.
    pub trees: usize,
    /// Key-value entries copied.
    pub entries: u64,
    /// The file's size.
    pub bytes: u64,
}

/// Hashes and counts what passes through.
struct Hashing<W> {
    inner: W,
    hash: Xxh3,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

fn io(e: std::io::Error) -> Error {
    Error::Internal(format!("backup I/O: {e}"))
}

fn put_bytes(w: &mut impl Write, b: &[u8]) -> Result<()> {
    let len = u32::try_from(b.len()).map_err(|_| Error::Internal("backup: a value over 4 GiB".into()))?;
    w.write_all(&len.to_be_bytes()).map_err(io)?;
    w.write_all(b).map_err(io)
}

/// Writes every tree of `db` to `out`. The caller keeps writers out meanwhile (see
/// [`crate::bank::Bank::backup`]) so the copy is one consistent state.
pub fn write(db: &sled::Db, out: impl Write) -> Result<BackupSummary> {
    let mut w = Hashing {
        inner: out,
        hash: Xxh3::new(),
        bytes: 0,
    };
    let header = BackupHeader {
        format: FORMAT,
        schema_version: SCHEMA_VERSION,
        created_at_ms: crate::domain::now_ms(),
        id_floor: db.generate_id()? + 1,
    };
    w.write_all(MAGIC).map_err(io)?;
    put_bytes(
        &mut w,
        &serde_json::to_vec(&header).map_err(|e| Error::Internal(e.to_string()))?,
    )?;
    let mut summary = BackupSummary {
        schema_version: SCHEMA_VERSION,
        ..Default::default()
    };
    for name in db.tree_names() {
        let tree = db.open_tree(&name)?;
        w.write_all(b"T").map_err(io)?;
        put_bytes(&mut w, &name)?;
        summary.trees += 1;
        for kv in tree.iter() {
            let (k, v) = kv?;
            w.write_all(b"E").map_err(io)?;
            put_bytes(&mut w, &k)?;
            put_bytes(&mut w, &v)?;
            summary.entries += 1;
        }
    }
    w.write_all(b"Z").map_err(io)?;
    let sum = w.hash.digest();
    w.inner.write_all(&sum.to_be_bytes()).map_err(io)?;
    w.inner.flush().map_err(io)?;
    summary.bytes = w.bytes + 8;
    Ok(summary)
}

/// Reads the header of a backup file (the client checks what the daemon sent before it calls
/// it a backup); anything else is [`Error::Corrupt`].
pub fn read_header(input: impl Read) -> Result<BackupHeader> {
    let mut r = std::io::BufReader::new(input);
    let mut magic = [0u8; MAGIC.len()];
    read_exact(&mut r, &mut magic)?;
    if magic != MAGIC {
        return Err(corrupt("not a relist backup"));
    }
    serde_json::from_slice(&get_bytes(&mut r)?).map_err(corrupt)
}

fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::Corrupt(format!("backup file: {what}"))
}

fn read_exact(r: &mut impl Read, buf: &mut [u8]) -> Result<()> {
    r.read_exact(buf).map_err(|e| corrupt(format!("truncated ({e})")))
}

fn get_bytes(r: &mut impl Read) -> Result<Vec<u8>> {
    let mut len = [0u8; 4];
    read_exact(r, &mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    let mut out = Vec::new();
    // take() bounds the allocation by what the file really has.
    r.take(len as u64).read_to_end(&mut out).map_err(io)?;
    if out.len() != len {
        return Err(corrupt("truncated"));
    }
    Ok(out)
}

/// Restores a backup into `dir`, which must not exist or be empty. On any failure the
/// half-written store is deleted, so a failed restore leaves nothing to start on by mistake.
pub fn restore(input: impl Read, dir: &Path) -> Result<BackupSummary> {
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).map_err(io)?;
        if entries.next().is_some() {
            return Err(Error::invalid(
                "data_dir",
                format!("{} is not empty; restore only into a new data dir", dir.display()),
            ));
        }
    }
    let result = restore_into(input, dir);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

fn restore_into(input: impl Read, dir: &Path) -> Result<BackupSummary> {
    let mut r = Hashing {
        inner: std::io::BufReader::new(input),
        hash: Xxh3::new(),
        bytes: 0,
    };
    let mut magic = [0u8; MAGIC.len()];
    read_exact(&mut r, &mut magic)?;
    if magic != MAGIC {
        return Err(corrupt("not a relist backup"));
    }
    let header: BackupHeader = serde_json::from_slice(&get_bytes(&mut r)?).map_err(corrupt)?;
    if header.format != FORMAT {
        return Err(corrupt(format!(
            "format {} (this relist reads {FORMAT})",
            header.format
        )));
    }
    // An older store is upgraded in place when the daemon opens it; a newer one is not readable.
    if header.schema_version == 0 || header.schema_version > SCHEMA_VERSION {
        return Err(Error::Corrupt(format!(
            "the backup has schema version {}, this relist reads versions 1 to {SCHEMA_VERSION}",
            header.schema_version
        )));
    }
    if header.id_floor > MAX_ID_FLOOR {
        return Err(corrupt(format!("id_floor {} is implausible", header.id_floor)));
    }
    let db = sled::Config::new().path(dir).open()?;
    let mut summary = BackupSummary {
        schema_version: header.schema_version,
        ..Default::default()
    };
    let mut tree: Option<sled::Tree> = None;
    let mut batch = sled::Batch::default();
    let mut pending = 0usize;
    loop {
        let mut tag = [0u8; 1];
        read_exact(&mut r, &mut tag)?;
        match tag[0] {
            b'T' => {
                if let Some(t) = tree.take() {
                    t.apply_batch(std::mem::take(&mut batch))?;
                }
                pending = 0;
                tree = Some(db.open_tree(get_bytes(&mut r)?)?);
                summary.trees += 1;
            }
            b'E' => {
                let t = tree.as_ref().ok_or_else(|| corrupt("an entry before any tree"))?;
                let (k, v) = (get_bytes(&mut r)?, get_bytes(&mut r)?);
                batch.insert(k, v);
                pending += 1;
                summary.entries += 1;
                if pending == 10_000 {
                    t.apply_batch(std::mem::take(&mut batch))?;
                    pending = 0;
                }
            }
            b'Z' => break,
            other => return Err(corrupt(format!("unknown record tag {other}"))),
        }
    }
    if let Some(t) = tree.take() {
        t.apply_batch(batch)?;
    }
    let digest = r.hash.digest();
    let mut sum = [0u8; 8];
    r.inner
        .read_exact(&mut sum)
        .map_err(|e| corrupt(format!("truncated checksum ({e})")))?;
    if u64::from_be_bytes(sum) != digest {
        return Err(corrupt("checksum mismatch"));
    }
    // Hand out no id the source store had already used. sled cannot set its counter (and
    // changing its persist interval between opens trips its own assertions), so walk it: an
    // atomic increment each, a few million per second.
    while db.generate_id()? < header.id_floor {}
    db.flush()?;
    summary.bytes = r.bytes + 8;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_every_tree_and_the_id_counter() {
        let dir = tempfile::tempdir().unwrap();
        // Reopening moves sled's id counter on by two million.
        for _ in 0..3 {
            sled::Config::new().path(dir.path().join("a")).open().unwrap();
        }
        let db = sled::Config::new().path(dir.path().join("a")).open().unwrap();
        db.insert(b"k", b"v").unwrap();
        let t = db.open_tree("things").unwrap();
        for i in 0u32..25_000 {
            t.insert(i.to_be_bytes(), vec![1u8; 10]).unwrap();
        }
        let used = db.generate_id().unwrap();
        assert!(used >= 2_000_000, "reopening moved the counter: {used}");
        let mut file = Vec::new();
        let s = write(&db, &mut file).unwrap();
        assert_eq!(s.entries, 25_001);
        assert_eq!(s.bytes, file.len() as u64);

        let to = dir.path().join("b");
        let started = std::time::Instant::now();
        let r = restore(file.as_slice(), &to).unwrap();
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "{:?}",
            started.elapsed()
        );
        println!("restore with an id floor of {used}: {:?}", started.elapsed());
        assert_eq!((r.trees, r.entries), (s.trees, s.entries));
        // sled's flusher thread may hold the file lock a moment after the last handle drops.
        let db2 = (0..100)
            .find_map(|_| {
                sled::Config::new().path(&to).open().ok().or_else(|| {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    None
                })
            })
            .expect("the restored store opens");
        assert_eq!(db2.open_tree("things").unwrap().len(), 25_000);
        assert_eq!(db2.get(b"k").unwrap().unwrap().as_ref(), b"v");
        assert!(db2.generate_id().unwrap() > used);
        drop(db2);

        // Not into a non-empty dir; a flipped byte or a cut file restores nothing.
        assert!(matches!(
            restore(file.as_slice(), &to),
            Err(Error::InvalidArgument { .. })
        ));
        let mut bad = file.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 1;
        let c = dir.path().join("c");
        assert!(matches!(restore(bad.as_slice(), &c), Err(Error::Corrupt(_))));
        assert!(!c.exists());
        assert!(matches!(restore(&file[..file.len() - 3], &c), Err(Error::Corrupt(_))));
    }

    #[test]
    fn newer_schema_versions_are_refused() {
        let header = BackupHeader {
            format: FORMAT,
            schema_version: SCHEMA_VERSION + 1,
            created_at_ms: 0,
            id_floor: 1,
        };
        let mut file = MAGIC.to_vec();
        put_bytes(&mut file, &serde_json::to_vec(&header).unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let e = restore(file.as_slice(), &dir.path().join("x")).unwrap_err();
        assert!(e.to_string().contains("schema version"), "{e}");
    }
}
