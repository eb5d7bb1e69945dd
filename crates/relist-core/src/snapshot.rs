//! The index snapshot: the live index written to a file on graceful shutdown, so that the next
//! start reads a few flat arrays instead of decoding every takedown from sled and inserting
//! it (about 45 s at ten million takedowns).
//!
//! Soundness: a snapshot must reflect the store exactly, or an acknowledged takedown could
//! stop matching, a removed one match again, or an entry lack its stored record. So:
//!
//! 1. On graceful shutdown the bank refuses further writes, flushes the store, writes the
//!    snapshot to a temporary file, fsyncs it, renames it to [`FILE_NAME`], fsyncs the data
//!    dir, and only then records the snapshot's random id and checksum under
//!    [`META_KEY`](crate::store::META_KEY) in the store's `meta` tree (and flushes). A crash before that leaves no key: full load.
//! 2. Every open of the store ([`crate::store::Store::open`], whatever opens it: the daemon,
//!    `relist keys --data-dir`, tests) takes the key out of `meta` and flushes before anything
//!    can write, and keeps what it said in memory ([`Claim`]). A store opened once and killed
//!    later has no key: full load.
//! 3. At start the snapshot is used only when its header matches the claim's id, its build
//!    parameters match this relist's (format, schema and text fingerprint versions, relist
//!    version, the PDQ quality floor the index was filtered with) and its xxh3 checksum
//!    verifies (against the file's trailer and the claim). Anything else (no key, a restored
//!    store without the file, a flipped byte, a short file, another config) is a warning and
//!    the normal full load from sled: a bad snapshot never stops the daemon from starting.
//!    Then the file is deleted: without the key it can never be valid again.
//!
//! The file (all integers little-endian): magic `RLSTSNAP`, format version (u32), store schema
//! version (u32), text fingerprint version (u32), PDQ quality floor (u32), the relist version
//! (u32 length + UTF-8), the snapshot id (u64); then the live index (see
//! [`crate::matcher::LiveIndex`] and [`crate::index::HammingIndex`]: counts as u64, then flat
//! arrays); then the xxh3-64 of every byte before it (u64). Every count is checked against
//! the bytes left in the file before anything is allocated for it.
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

pub use crate::codec::SnapshotError;
use crate::codec::{invalid, Decoder, Encoder};
use crate::error::{Error, Result};
use crate::matcher::LiveIndex;
use crate::store::Claim;

/// The snapshot's file name in the data dir.
pub const FILE_NAME: &str = "index.snapshot";
/// Written first, renamed to [`FILE_NAME`] once complete and on disk.
const TEMP_NAME: &str = "index.snapshot.tmp";
const MAGIC: &[u8; 8] = b"RLSTSNAP";
/// Version of the file layout. Bump it on any change of the layout or of what the live index
/// holds for a stored takedown (entry ids, which hashes are indexed).
///
/// - 2: pHashes of images whose PDQ is under the quality floor are no longer indexed.
/// - 3: region entry ids mark regions that are only a part of their picture.
/// - 4: stored pictures' appearances and region rects (the colour check) follow the local
///   features' positions.
/// - 5: an index's tables are no longer written (reading rebuilds them, in the layout for the
///   size read: it follows the bank's size); each index says whether its layout is fixed.
pub const FORMAT: u32 = 5;
/// Longest relist version string accepted in a header.
const MAX_VERSION_LEN: usize = 64;

/// What the index in a snapshot depends on besides the store: a snapshot built under other
/// parameters is not used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Build {
    pub schema_version: u32,
    pub text_fingerprint_version: u32,
    /// PDQ hashes under this quality are left out of the index.
    pub pdq_min_quality: u8,
    pub relist_version: String,
}

impl Build {
    /// This relist's parameters, with the configured PDQ quality floor.
    pub fn current(pdq_min_quality: u8) -> Build {
        Build {
            schema_version: crate::store::SCHEMA_VERSION,
            text_fingerprint_version: crate::fingerprint::text::TEXT_FINGERPRINT_VERSION,
            pdq_min_quality,
            relist_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

/// A snapshot written by [`write`].
#[derive(Clone, Copy, Debug)]
pub struct Written {
    /// What the store records, for the next start to check the file against.
    pub claim: Claim,
    /// The file's size.
    pub bytes: u64,
    /// How long writing it took (shutdown waits for it).
    pub elapsed: Duration,
}

/// Writes `index` as the snapshot file of `dir`, durably (temp file, fsync, rename, fsync of
/// the dir). The caller must make sure the index is exactly what the store holds and that
/// nothing writes to the store from then on, then [`publish`] the claim.
pub fn write(dir: &Path, index: &LiveIndex, build: &Build) -> Result<Written> {
    let started = Instant::now();
    let tmp = dir.join(TEMP_NAME);
    let out = write_file(dir, &tmp, index, build);
    if out.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    let (claim, bytes) = out.map_err(|e| Error::Internal(format!("writing the index snapshot: {e}")))?;
    Ok(Written {
        claim,
        bytes,
        elapsed: started.elapsed(),
    })
}

fn write_file(dir: &Path, tmp: &Path, index: &LiveIndex, build: &Build) -> io::Result<(Claim, u64)> {
    let mut id = [0u8; 8];
    getrandom::getrandom(&mut id).map_err(|e| io::Error::other(e.to_string()))?;
    let id = u64::from_le_bytes(id);
    let mut e = Encoder::new(File::create(tmp)?);
    write_header(&mut e, build, id)?;
    index.write_snapshot(&mut e)?;
    let (file, checksum, bytes) = e.finish()?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(tmp, dir.join(FILE_NAME))?;
    File::open(dir)?.sync_all()?;
    Ok((Claim { id, checksum }, bytes))
}

fn write_header<W: Write>(e: &mut Encoder<W>, build: &Build, id: u64) -> io::Result<()> {
    e.bytes(MAGIC)?;
    e.u32(FORMAT)?;
    e.u32(build.schema_version)?;
    e.u32(build.text_fingerprint_version)?;
    e.u32(u32::from(build.pdq_min_quality))?;
    e.u32(build.relist_version.len() as u32)?;
    e.bytes(build.relist_version.as_bytes())?;
    e.u64(id)
}

/// Reads and checks a header; the id must be the claim's.
fn read_header<R: Read>(d: &mut Decoder<R>, build: &Build, id: u64) -> std::result::Result<(), SnapshotError> {
    if d.take(MAGIC.len())? != MAGIC {
        return Err(invalid("not an index snapshot (bad magic)"));
    }
    let format = d.u32()?;
    if format != FORMAT {
        return Err(invalid(format!("snapshot format {format}, this relist reads {FORMAT}")));
    }
    let found = Build {
        schema_version: d.u32()?,
        text_fingerprint_version: d.u32()?,
        pdq_min_quality: u8::try_from(d.u32()?).map_err(|_| invalid("PDQ quality floor out of range"))?,
        relist_version: {
            let n = d.u32()? as usize;
            if n > MAX_VERSION_LEN {
                return Err(invalid("relist version too long"));
            }
            String::from_utf8_lossy(d.take(n)?).into_owned()
        },
    };
    if found != *build {
        return Err(invalid(format!(
            "snapshot built under {found:?}, this daemon runs {build:?}"
        )));
    }
    let found_id = d.u64()?;
    if found_id != id {
        return Err(invalid(format!(
            "snapshot id {found_id:016x} is not the store's {id:016x} (the store changed since)"
        )));
    }
    Ok(())
}

/// Loads the snapshot of `dir` if it is the one `claim` names, built under `build`, and intact.
pub fn load(dir: &Path, claim: Claim, build: &Build) -> std::result::Result<LiveIndex, SnapshotError> {
    let mut file = File::open(dir.join(FILE_NAME))?;
    let len = file.metadata()?.len();
    let body = len.checked_sub(8).ok_or_else(|| invalid("snapshot file too short"))?;
    read(&mut file, body, claim, build)
}

/// [`load`] from any reader of `body` bytes plus the 8-byte checksum trailer.
pub fn read<R: Read>(
    input: R,
    body: u64,
    claim: Claim,
    build: &Build,
) -> std::result::Result<LiveIndex, SnapshotError> {
    let mut d = Decoder::new(input, body);
    read_header(&mut d, build, claim.id)?;
    let index = LiveIndex::read_snapshot(&mut d)?;
    let checksum = d.finish()?;
    if checksum != claim.checksum {
        return Err(invalid("snapshot checksum is not the store's"));
    }
    Ok(index)
}

/// Deletes the snapshot file (and a partial one) of `dir`; returns whether there was one.
/// Best effort: a file left behind is never used without its key.
pub fn discard(dir: &Path) -> bool {
    let _ = std::fs::remove_file(dir.join(TEMP_NAME));
    match std::fs::remove_file(dir.join(FILE_NAME)) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => {
            tracing::warn!(error = %e, "cannot delete the stale index snapshot");
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::RegionRect;
    use crate::domain::{
        CandidateImage, HashKind, ImageFingerprint, ListingFingerprints, RegionFingerprint, RegionHash,
    };
    use crate::fingerprint::appearance::Appearance;
    use crate::fingerprint::local::Feature;
    use crate::fingerprint::pdq::PdqHash;
    use crate::policy::Thresholds;
    use rand::{Rng, SeedableRng};

    type Rng64 = rand::rngs::StdRng;

    fn fingerprints(rng: &mut Rng64) -> ListingFingerprints {
        let images = (0..rng.gen_range(1..4))
            .map(|_| ImageFingerprint {
                pdq: rng.gen_bool(0.9).then(|| PdqHash(rng.gen())),
                // Some under the quality floor: left out of the index.
                pdq_quality: rng.gen_range(20..100),
                phash: rng.gen_bool(0.8).then(|| rng.gen()),
            })
            .collect::<Vec<_>>();
        let regions = (0..rng.gen_range(0..4))
            .map(|_| RegionFingerprint {
                image: rng.gen_range(0..images.len() as u8),
                pdq: Some(PdqHash(rng.gen())),
                pdq_quality: rng.gen_range(20..100),
                part: rng.gen_bool(0.5),
                rect: rng.gen_bool(0.5).then(|| RegionRect(rng.gen())),
            })
            .collect();
        let features = if rng.gen_bool(0.3) {
            (0..rng.gen_range(10..40))
                .map(|_| {
                    let f = Feature {
                        x: rng.gen_range(0..320),
                        y: rng.gen_range(0..320),
                        level: rng.gen_range(0..3),
                        bits: rng.gen(),
                    };
                    (rng.gen_range(0..images.len() as u8), f)
                })
                .collect()
        } else {
            Vec::new()
        };
        ListingFingerprints {
            images,
            title_simhash: rng.gen_bool(0.7).then(|| rng.gen()),
            normalized_title: String::new(),
            regions,
            features,
            appearances: if rng.gen_bool(0.5) {
                vec![(
                    0,
                    Appearance {
                        cells: Box::new(std::array::from_fn(|_| rng.gen())),
                        effective_side: rng.gen(),
                    },
                )]
            } else {
                Vec::new()
            },
        }
    }

    fn flip(rng: &mut Rng64, words: &mut [u8], bits: u32) {
        for _ in 0..bits {
            let b = rng.gen_range(0..words.len() * 8);
            words[b / 8] ^= 1 << (b % 8);
        }
    }

    /// A check near a stored listing: its hashes and features with a few bits flipped.
    fn query_near(rng: &mut Rng64, f: &ListingFingerprints) -> (Vec<CandidateImage>, Option<u64>) {
        let images = f
            .images
            .iter()
            .enumerate()
            .map(|(i, img)| {
                let pdq = img.pdq.map(|p| {
                    let mut b = p.0;
                    let bits = rng.gen_range(0..40);
                    flip(rng, &mut b, bits);
                    PdqHash(b)
                });
                let features = f
                    .features
                    .iter()
                    .filter(|(image, _)| usize::from(*image) == i)
                    .map(|(_, feat)| {
                        let mut bits = feat.bits;
                        bits[0] ^= 1 << rng.gen_range(0..64);
                        Feature {
                            level: 0,
                            bits,
                            ..*feat
                        }
                    })
                    .collect();
                CandidateImage {
                    fingerprint: ImageFingerprint {
                        pdq,
                        pdq_quality: 100,
                        phash: img.phash.map(|h| h ^ 0b1011),
                    },
                    pdq_variants: None,
                    regions: f
                        .regions
                        .iter()
                        .filter_map(|r| {
                            r.pdq.map(|pdq| RegionHash {
                                pdq,
                                quality: 100,
                                part: r.part,
                                rect: r.rect.unwrap_or(RegionRect([0, 0, 65535, 65535])),
                                mirrored: false,
                            })
                        })
                        .collect(),
                    features,
                    appearance: None,
                    region_appearances: Vec::new(),
                    thumbnail: None,
                }
            })
            .collect();
        (images, f.title_simhash.map(|h| h ^ 0b11))
    }

    /// A live index with takedowns added, updated and removed, as a running daemon's is.
    fn live_index(rng: &mut Rng64, min_quality: u8) -> (LiveIndex, Vec<ListingFingerprints>) {
        let mut index = LiveIndex::default();
        let mut stored: Vec<Option<ListingFingerprints>> = Vec::new();
        for id in 0..400u64 {
            let f = fingerprints(rng);
            index.add(id, &f, min_quality);
            stored.push(Some(f));
        }
        for _ in 0..80 {
            let id = rng.gen_range(0..stored.len());
            if let Some(old) = stored[id].take() {
                index.remove(id as u64, &old);
                if rng.gen_bool(0.5) {
                    let f = fingerprints(rng);
                    index.add(id as u64, &f, min_quality);
                    stored[id] = Some(f);
                }
            }
        }
        (index, stored.into_iter().flatten().collect())
    }

    #[test]
    fn live_index_round_trips_through_a_snapshot_file() {
        let mut rng = Rng64::seed_from_u64(5);
        let t = Thresholds::default();
        let (index, stored) = live_index(&mut rng, t.pdq_min_quality);
        let dir = tempfile::tempdir().unwrap();
        let build = Build::current(t.pdq_min_quality);
        let w = write(dir.path(), &index, &build).unwrap();
        assert_eq!(std::fs::metadata(dir.path().join(FILE_NAME)).unwrap().len(), w.bytes);
        assert!(!dir.path().join(TEMP_NAME).exists());
        let back = load(dir.path(), w.claim, &build).expect("the snapshot loads");
        assert_eq!(back.sizes(), index.sizes());
        let (mut kinds, mut texts) = (std::collections::HashSet::new(), 0);
        for f in stored.iter().cycle().take(600) {
            let (images, title) = query_near(&mut rng, f);
            let want = index.find(&images, title, &t);
            assert_eq!(back.find(&images, title, &t), want);
            for ev in want.values() {
                kinds.extend(ev.images.iter().map(|e| e.kind));
                texts += usize::from(ev.text_distance.is_some());
            }
        }
        // The queries exercised every index, local features (and their positions) included.
        for k in [HashKind::Pdq, HashKind::Phash, HashKind::Local, HashKind::PdqPart] {
            assert!(kinds.contains(&k), "no {k:?} evidence found");
        }
        assert!(texts > 0, "no title evidence found");
        // Random far queries too.
        for _ in 0..100 {
            let f = fingerprints(&mut rng);
            let (images, title) = query_near(&mut rng, &f);
            assert_eq!(back.find(&images, title, &t), index.find(&images, title, &t));
        }
    }

    #[test]
    fn a_snapshot_is_used_only_with_its_claim_and_build_and_intact() {
        let mut rng = Rng64::seed_from_u64(6);
        let (index, _) = live_index(&mut rng, 50);
        let dir = tempfile::tempdir().unwrap();
        let build = Build::current(50);
        let w = write(dir.path(), &index, &build).unwrap();
        let bytes = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
        let read_bytes = |b: &[u8], claim: Claim, build: &Build| {
            read(b, (b.len() as u64).saturating_sub(8), claim, build).map(|_| ())
        };
        read_bytes(&bytes, w.claim, &build).unwrap();
        let other_id = Claim {
            id: w.claim.id ^ 1,
            ..w.claim
        };
        assert!(read_bytes(&bytes, other_id, &build).is_err());
        let other_sum = Claim {
            checksum: w.claim.checksum ^ 1,
            ..w.claim
        };
        assert!(read_bytes(&bytes, other_sum, &build).is_err());
        // The index depends on the PDQ quality floor; and on the versions.
        assert!(read_bytes(&bytes, w.claim, &Build::current(51)).is_err());
        let older = Build {
            schema_version: build.schema_version - 1,
            ..build.clone()
        };
        assert!(read_bytes(&bytes, w.claim, &older).is_err());
        let other_relist = Build {
            relist_version: "0.0.0-other".into(),
            ..build.clone()
        };
        assert!(read_bytes(&bytes, w.claim, &other_relist).is_err());
        for pos in (0..bytes.len()).step_by(bytes.len() / 500 + 1).chain([bytes.len() - 1]) {
            let mut bad = bytes.clone();
            bad[pos] ^= 0x10;
            assert!(
                read_bytes(&bad, w.claim, &build).is_err(),
                "flipped byte {pos} went unnoticed"
            );
        }
        for cut in [0, 8, 30, bytes.len() / 3, bytes.len() - 8, bytes.len() - 1] {
            assert!(read_bytes(&bytes[..cut], w.claim, &build).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(read_bytes(&longer, w.claim, &build).is_err());

        assert!(discard(dir.path()));
        assert!(matches!(load(dir.path(), w.claim, &build), Err(SnapshotError::Io(_))));
        assert!(!discard(dir.path()));
    }
}
