//! Exact in-memory Hamming range index (multi-index hashing, Norouzi et al.).
//!
//! A code of `b = 64 * W` bits is split into `m` disjoint contiguous substrings, one table per
//! substring. Pigeonhole (Norouzi et al., Proposition 1): if `hamming(code, query) <= r`, then
//! for at least one table `t` the substrings differ in at most `s_t` bits (see
//! [`HammingIndex::sub_radius`]). A query therefore visits, in every table, the codes whose
//! substring lies within `s_t` of the query's and verifies each with the full distance. A code
//! found in table `t` is reported only if `t` is the first table whose substring is within its
//! radius, which makes results duplicate-free without a visited set. When probing would cost
//! more than a scan (large radius or a tiny index) the query scans; results are always exact.
//!
//! The layout follows the index's size (chosen when the tables are built: at the first insert,
//! when reading a snapshot, and each time the size doubles or halves):
//!
//! - `m = 2W + 1` substrings (3 of 21-22 bits for 64-bit codes, 9 of 28-29 bits for PDQ): as
//!   few as Norouzi's `m = b / log2 n` asks for at millions of codes, and the most whose
//!   records cost no more memory than the codes and ids themselves (4 bytes a record).
//! - A table is a compressed-row directory: the first `d = log2(n / 16)` bits of a substring
//!   (19 at 10M codes) select a bucket of about 16-32 records, `dir[key]..dir[key + 1]` in one
//!   flat array of `u32` records. No per-bucket allocation, 4 bytes of directory per 16 codes.
//! - A record is a `u32`: the slot number in the low bits (as many as twice the slots need),
//!   and the code's next bits after the key in the rest (7 at 10M codes). A lookup checks those
//!   bits while it reads the bucket in sequence, so the substring is effectively `d` + 7 bits
//!   long and most non-matching records are dropped without a random read of their code.
//!
//! A lookup reads a table's buckets in chunks of [`PROBE_CHUNK`], in three passes (prefetch
//! the directory entries, then the records, then read them), so that the cache misses of a
//! chunk overlap: a bucket read in one go waits for two misses in a row, and that wait was
//! most of a PDQ lookup's time at 10M codes.
//!
//! Updates are in place and matchable at once: an insert reuses a removed record's place in
//! its bucket or goes to a small per-table overflow hash table; a remove overwrites its records
//! with a tombstone. Each update then does at most one table's upkeep ([`HammingIndex`]'s
//! `maintain`): a table whose overflow or tombstones passed its limit (`len / 128` to about
//! twice that, different per table so that tables come due at different updates) is merged in
//! one sequential pass; when the size leaves the layout's range, the tables move to the new
//! layout one per update (a counting sort of the arena, ~0.3 s for one table of 10M PDQ
//! codes). A lookup reads each table in its own layout, so results stay exact meanwhile. No
//! update rebuilds the whole index, which at 10M PDQ codes would hold the index (and the
//! lookups waiting for it) for 2.5-3.7 s.
//!
//! The local-feature index keeps the fixed layout of 16-bit substrings
//! ([`HammingIndex::new_fixed`]): its bucket cap ([`HammingIndex::range_capped`]) is defined
//! over those buckets.

use std::mem::size_of;

use crate::codec::{le_u32, le_u64, Decoder, Encoder, SnapshotError};

/// How many candidates ahead `range_probe` prefetches.
const PREFETCH_AHEAD: usize = 16;
/// Buffers of one thread's probes, kept between calls: a photo's local-feature lookup makes
/// hundreds of probes, and growing fresh vectors for each cost ~0.3 ms of a photo check.
#[derive(Default)]
struct ProbeScratch {
    keys: Vec<u32>,
    candidates: Vec<u32>,
    spans: Vec<(usize, usize)>,
}

/// Entries a thread's probe buffers keep between calls.
const SCRATCH_KEPT: usize = 1 << 14;

thread_local! {
    static PROBE_SCRATCH: std::cell::RefCell<ProbeScratch> = std::cell::RefCell::default();
}

/// Most tables an index has: substrings are at least 16 bits, of at most 256.
const MAX_TABLES: usize = 16;
/// Buckets `range_probe` handles per pass: enough misses in flight to fill the memory
/// pipeline, few enough that what the first pass fetched is still in L1 for the second.
const PROBE_CHUNK: usize = 64;
/// Target mean records per bucket at the size a layout is chosen for (16-32 until the next
/// layout): fewer directory bits mean fewer random probes, more mean fewer records read.
const BUCKET_TARGET: usize = 16;
/// Codes from which a size-following layout uses its fewest tables (see
/// [`Layout::tables_for`]): 4M.
const COMPACT_FROM: usize = 1 << 22;
/// Entries from which [`HammingIndex::build_tables`] uses more than one core.
const PARALLEL_BUILD_FROM: usize = 1 << 18;
/// Most directory bits (a table's directory is `4 << DIR_MAX_BITS` bytes at most).
const DIR_MAX_BITS: u32 = 24;
/// Pending updates (overflow records, tombstones) a table may hold before a rebuild, at
/// least; otherwise `len / PENDING_SHARE`.
const PENDING_MIN: usize = 1024;
const PENDING_SHARE: usize = 128;
/// An empty overflow cell.
const EMPTY: u64 = u64::MAX;

/// A hint to bring `x` into cache; no effect on results.
#[inline(always)]
fn prefetch<T>(x: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint about a valid reference's address; it cannot fault or
    // change memory.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>((x as *const T).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}

/// Asks the kernel to back `v`'s buffer with transparent huge pages where it can: lookups
/// read these arrays at random, and with 4 KiB pages nearly every read also misses the TLB
/// (a page walk costs as much as the read itself, more in a VM). Only a hint: with huge pages
/// off or unavailable nothing changes, and results never do. Call it before the buffer is
/// written, so that its pages are faulted in huge.
pub(crate) fn advise_huge_pages<T>(v: &Vec<T>) {
    const HUGE: usize = 2 << 20;
    let bytes = v.capacity() * size_of::<T>();
    if bytes < 2 * HUGE {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        let start = v.as_ptr() as usize;
        let (lo, hi) = (start.next_multiple_of(HUGE), (start + bytes) / HUGE * HUGE);
        if hi > lo {
            // SAFETY: madvise with MADV_HUGEPAGE changes no contents and no mapping; the range
            // lies inside `v`'s live allocation. A failure (EINVAL without THP) is ignored.
            unsafe {
                libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE);
            }
        }
    }
}

/// Hamming distance between two `W`-word codes.
#[inline]
pub fn hamming<const W: usize>(a: &[u64; W], b: &[u64; W]) -> u32 {
    let mut d = 0;
    for i in 0..W {
        d += (a[i] ^ b[i]).count_ones();
    }
    d
}

/// `len` (<= 32) bits of `code` from bit `off` (< 64 W), wrapping around the code's end.
#[inline]
fn bits<const W: usize>(code: &[u64; W], off: u32, len: u32) -> u32 {
    let (w, sh) = ((off / 64) as usize, off % 64);
    let lo = code[w] >> sh;
    let hi = if sh == 0 { 0 } else { code[(w + 1) % W] << (64 - sh) };
    ((lo | hi) & ((1u64 << len) - 1)) as u32
}

/// Calls `f` with every mask of `width` bits and popcount `<= max_weight`, lowest weight
/// first, without allocating (Gosper's hack per weight).
#[inline]
fn for_each_mask(width: u32, max_weight: u32, mut f: impl FnMut(u32)) {
    f(0);
    for k in 1..=max_weight.min(width) {
        let mut m: u64 = (1u64 << k) - 1;
        while m < (1u64 << width) {
            f(m as u32);
            let c = m & m.wrapping_neg();
            let r = m + c;
            m = (((r ^ m) >> 2) >> c.trailing_zeros()) | r;
        }
    }
}

/// Number of masks of `width` bits with popcount `<= s`.
fn masks_within(width: u32, s: u32) -> f64 {
    let (mut c, mut acc) = (1f64, 0f64);
    for k in 0..=s.min(width) {
        acc += c;
        c = c * f64::from(width - k) / f64::from(k + 1);
    }
    acc
}

/// Bits needed to tell `n` values apart.
fn bits_for(n: usize) -> u32 {
    usize::BITS - n.saturating_sub(1).leading_zeros()
}

/// How the tables cut and file the codes; a function of the index's size (and of whether the
/// index is fixed), rebuilt as it grows.
#[derive(Clone, Debug, PartialEq)]
struct Layout {
    /// Per table: first bit and width (<= 32) of its substring; together they cover the code.
    subs: Vec<(u32, u32)>,
    /// Directory bits: the first `dir_bits` of a substring select its bucket.
    dir_bits: u32,
    /// Low bits of a record holding the slot number; all ones is a tombstone.
    slot_bits: u32,
    /// Bits of the code stored above the slot: those following the directory key.
    sfx_bits: u32,
    /// Entry count the layout was chosen for.
    planned: usize,
}

impl Layout {
    /// The layout for `len` entries in `slots` slots. `fixed`: 16-bit substrings, each whole
    /// substring a bucket key, whatever the size.
    fn plan(bits: u32, fixed: bool, len: usize, slots: usize) -> Self {
        let m = if fixed { bits / 16 } else { Self::tables_for(bits, len) };
        let subs = (0..m)
            .scan(0, |off, t| {
                let width = bits / m + u32::from(t < bits % m);
                let s = (*off, width);
                *off += width;
                Some(s)
            })
            .collect::<Vec<_>>();
        let narrowest = subs.iter().map(|s| s.1).min().unwrap_or(16);
        let dir_bits = if fixed {
            16
        } else {
            (usize::BITS - 1 - (len / BUCKET_TARGET).max(1).leading_zeros()).clamp(4, narrowest.min(DIR_MAX_BITS))
        };
        // Twice the slots in use, and the tombstone: room to grow before the next layout.
        let slot_bits = bits_for(2 * slots.max(len).max(64) + 2).min(31);
        let sfx_bits = (32 - slot_bits).min(bits - dir_bits);
        Layout {
            subs,
            dir_bits,
            slot_bits,
            sfx_bits,
            planned: len,
        }
    }

    /// How many substrings a size-following layout cuts `bits`-bit codes into at `len` codes:
    /// Norouzi's `m = b / log2 n` (the substring as long as the bits needed to tell the codes
    /// apart, which balances buckets probed against candidates verified), between `2W + 1`
    /// and `b / 16` tables. From [`COMPACT_FROM`] codes on, `2W + 1` whatever Norouzi says:
    /// records cost 4 bytes a table, and `2W + 1` tables keep a code at or under 80 bytes (PDQ)
    /// and 48 (64-bit) with its id, which matters once a bank holds millions of codes; below
    /// that, speed matters more than bytes (PDQ at 1M codes: 13 tables, ~0.6 ms for a lookup
    /// of 8 variants at radius 31 against ~2 ms with 9).
    fn tables_for(bits: u32, len: usize) -> u32 {
        let fewest = bits / 32 + 1;
        if len >= COMPACT_FROM {
            return fewest;
        }
        let norouzi = f64::from(bits) / (len.max(2) as f64).log2();
        (norouzi.round() as u32).clamp(fewest, bits / 16)
    }

    /// Whether records and buckets mean the same in both layouts.
    fn same_cut(&self, other: &Layout) -> bool {
        (&self.subs, self.dir_bits, self.slot_bits) == (&other.subs, other.dir_bits, other.slot_bits)
    }

    #[inline]
    fn slot_mask(&self) -> u32 {
        (1u32 << self.slot_bits) - 1
    }

    /// Mask of the record's code bits that lie inside table `t`'s substring.
    #[inline]
    fn inner_mask(&self, t: usize) -> u32 {
        let inside = self.subs[t].1 - self.dir_bits;
        let k = inside.min(self.sfx_bits);
        ((1u64 << k) - 1) as u32
    }

    /// Table `t`'s bucket key for `code`.
    #[inline]
    fn key<const W: usize>(&self, code: &[u64; W], t: usize) -> usize {
        bits(code, self.subs[t].0, self.dir_bits) as usize
    }

    /// The code bits a record of table `t` carries.
    #[inline]
    fn sfx<const W: usize>(&self, code: &[u64; W], t: usize) -> u32 {
        if self.sfx_bits == 0 {
            return 0;
        }
        bits(code, (self.subs[t].0 + self.dir_bits) % (64 * W as u32), self.sfx_bits)
    }

    /// The record of `code` in `slot` for table `t`.
    #[inline]
    fn record<const W: usize>(&self, code: &[u64; W], t: usize, slot: u32) -> u32 {
        if self.sfx_bits == 0 {
            return slot;
        }
        self.sfx(code, t) << self.slot_bits | slot
    }

    /// Table `t`'s substring of `x`.
    #[inline]
    fn sub<const W: usize>(&self, x: &[u64; W], t: usize) -> u32 {
        bits(x, self.subs[t].0, self.subs[t].1)
    }
}

/// Records inserted since the last rebuild whose bucket had no free place: an open-addressing
/// hash table of `key << 32 | record` cells (linear probing; one key may fill several cells),
/// with a bitmap of the keys present so that a lookup skips it for every other bucket.
#[derive(Default)]
struct Overflow {
    cells: Vec<u64>,
    len: usize,
    keys: Vec<u64>,
}

impl Overflow {
    #[inline]
    fn home(&self, key: usize) -> usize {
        let shift = 64 - self.cells.len().trailing_zeros();
        ((key as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> shift) as usize
    }

    #[inline]
    fn has_key(&self, key: usize) -> bool {
        self.keys.get(key / 64).is_some_and(|w| w >> (key % 64) & 1 == 1)
    }

    /// Brings the first cell `key` would be read from into cache, if it has records.
    #[inline]
    fn prefetch(&self, key: usize) {
        if self.len != 0 && self.has_key(key) {
            prefetch(&self.cells[self.home(key)]);
        }
    }

    /// Calls `f` with every record filed under `key`.
    #[inline]
    fn for_each(&self, key: usize, mut f: impl FnMut(u32)) {
        if self.len == 0 || !self.has_key(key) {
            return;
        }
        let mask = self.cells.len() - 1;
        let mut i = self.home(key);
        while self.cells[i] != EMPTY {
            if (self.cells[i] >> 32) as usize == key {
                f(self.cells[i] as u32);
            }
            i = (i + 1) & mask;
        }
    }

    fn insert(&mut self, key: usize, rec: u32, dir_bits: u32) {
        if (self.len + 1) * 3 > self.cells.len() * 2 {
            let cap = (self.cells.len() * 2).max(64);
            let old = std::mem::replace(&mut self.cells, vec![EMPTY; cap]);
            self.len = 0;
            for c in old.into_iter().filter(|&c| c != EMPTY) {
                self.put(c);
            }
        }
        if self.keys.is_empty() {
            self.keys = vec![0; (1usize << dir_bits).div_ceil(64)];
        }
        self.keys[key / 64] |= 1 << (key % 64);
        self.put((key as u64) << 32 | u64::from(rec));
    }

    fn put(&mut self, cell: u64) {
        let mask = self.cells.len() - 1;
        let mut i = self.home((cell >> 32) as usize);
        while self.cells[i] != EMPTY {
            i = (i + 1) & mask;
        }
        self.cells[i] = cell;
        self.len += 1;
    }

    /// Removes one cell of `(key, rec)`, closing the gap by backward shifting.
    fn remove(&mut self, key: usize, rec: u32) -> bool {
        if self.len == 0 {
            return false;
        }
        let cell = (key as u64) << 32 | u64::from(rec);
        let mask = self.cells.len() - 1;
        let mut i = self.home(key);
        loop {
            match self.cells[i] {
                EMPTY => return false,
                c if c == cell => break,
                _ => i = (i + 1) & mask,
            }
        }
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let c = self.cells[j];
            if c == EMPTY {
                break;
            }
            let h = self.home((c >> 32) as usize);
            // The cell at j may move to the gap at i unless its home lies cyclically in (i, j].
            let stays = if i <= j { i < h && h <= j } else { h > i || h <= j };
            if !stays {
                self.cells[i] = c;
                i = j;
            }
        }
        self.cells[i] = EMPTY;
        self.len -= 1;
        true
    }

    fn count(&self, key: usize) -> usize {
        let mut n = 0;
        self.for_each(key, |_| n += 1);
        n
    }

    fn heap_bytes(&self) -> usize {
        self.cells.capacity() * 8 + self.keys.capacity() * 8
    }
}

/// One table: bucket `k`'s records are `recs[dir[k]..dir[k + 1]]`, then its overflow.
struct Table {
    /// The layout this table was built in: tables move to a new layout one at a time.
    lay: Layout,
    dir: Vec<u32>,
    recs: Vec<u32>,
    over: Overflow,
    /// Records of `recs` that are tombstones.
    tombs: usize,
}

impl Table {
    #[inline]
    fn bucket(&self, key: usize) -> &[u32] {
        &self.recs[self.dir[key] as usize..self.dir[key + 1] as usize]
    }

    /// Merges the overflow into the buckets and drops the tombstones.
    fn merge(&mut self) {
        let (tomb, buckets) = (self.lay.slot_mask(), 1usize << self.lay.dir_bits);
        let mut over: Vec<u64> = self.over.cells.iter().copied().filter(|&c| c != EMPTY).collect();
        // A cell's key is its high half: sorting cells sorts them by bucket.
        over.sort_unstable();
        let mut over = over.into_iter().peekable();
        let mut recs = Vec::with_capacity(self.recs.len() - self.tombs + self.over.len);
        let mut dir = Vec::with_capacity(buckets + 1);
        advise_huge_pages(&recs);
        advise_huge_pages(&dir);
        dir.push(0);
        for k in 0..buckets {
            recs.extend(self.bucket(k).iter().filter(|&&r| r & tomb != tomb));
            while let Some(c) = over.next_if(|&c| (c >> 32) as usize == k) {
                recs.push(c as u32);
            }
            dir.push(recs.len() as u32);
        }
        self.dir = dir;
        self.recs = recs;
        self.over = Overflow::default();
        self.tombs = 0;
    }

    #[inline]
    fn bucket_mut(&mut self, key: usize) -> &mut [u32] {
        let (lo, hi) = (self.dir[key] as usize, self.dir[key + 1] as usize);
        &mut self.recs[lo..hi]
    }
}

/// Exact Hamming-radius index over W-word (64*W-bit) codes.
pub struct HammingIndex<const W: usize> {
    /// Slot arena: code per slot (stale for free slots).
    codes: Vec<[u64; W]>,
    /// Slot arena: id per slot (stale for free slots).
    ids: Vec<u64>,
    /// Liveness bitset over slots.
    live: Vec<u64>,
    /// Free slots, reused by `insert`.
    free: Vec<u32>,
    /// Number of live entries.
    len: usize,
    /// 16-bit substrings whatever the size (see [`HammingIndex::new_fixed`]).
    fixed: bool,
    layout: Layout,
    /// One per substring; empty while the index has never held an entry or holds none.
    tables: Vec<Table>,
    /// Pending updates a table may hold before a rebuild (tests lower it).
    pending_min: usize,
}

impl<const W: usize> Default for HammingIndex<W> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const W: usize> HammingIndex<W> {
    const BITS: u32 = 64 * W as u32;

    /// Creates an empty index whose layout follows its size. Tables are built on first insert.
    pub fn new() -> Self {
        Self::with_fixed(false)
    }

    /// Creates an empty index of 16-bit substrings whatever its size, each whole substring a
    /// bucket: for [`range_capped`](Self::range_capped), whose cap is over those buckets.
    pub fn new_fixed() -> Self {
        Self::with_fixed(true)
    }

    fn with_fixed(fixed: bool) -> Self {
        assert!(W > 0, "HammingIndex requires W >= 1");
        const { assert!(W * 64 / 16 <= MAX_TABLES, "at most MAX_TABLES substrings of 16 bits") };
        Self {
            codes: Vec::new(),
            ids: Vec::new(),
            live: Vec::new(),
            free: Vec::new(),
            len: 0,
            fixed,
            layout: Layout::plan(Self::BITS, fixed, 0, 0),
            tables: Vec::new(),
            pending_min: PENDING_MIN,
        }
    }

    /// Number of live entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the index holds no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    fn is_live(&self, slot: usize) -> bool {
        self.live[slot / 64] >> (slot % 64) & 1 == 1
    }

    /// Calls `f` with every live slot, in order.
    fn for_each_live(live: &[u64], mut f: impl FnMut(usize)) {
        for (i, &word) in live.iter().enumerate() {
            let mut w = word;
            while w != 0 {
                f(i * 64 + w.trailing_zeros() as usize);
                w &= w - 1;
            }
        }
    }

    /// Builds every table in the layout for the current size, from the arena (on the first
    /// insert and when reading a snapshot).
    fn rebuild(&mut self) {
        self.layout = self.plan_now();
        self.tables = if self.len == 0 { Vec::new() } else { self.build_tables() };
    }

    /// The layout for the index's current size and slots.
    fn plan_now(&self) -> Layout {
        Layout::plan(Self::BITS, self.fixed, self.len, self.ids.len())
    }

    /// Every table in the current layout. On a large index (a start from the snapshot, a
    /// change in table count) the tables are built on all cores: each is an independent
    /// counting sort over the shared, read-only arena (10M PDQ codes: ~2.7 s on one core).
    fn build_tables(&self) -> Vec<Table> {
        let m = self.layout.subs.len();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(m);
        if self.len < PARALLEL_BUILD_FROM || threads < 2 {
            return (0..m).map(|t| self.build_table(t)).collect();
        }
        let mut built: Vec<Option<Table>> = (0..m).map(|_| None).collect();
        std::thread::scope(|scope| {
            // A share whose thread cannot start is built below, like any table still missing.
            let workers: Vec<_> = (1..threads)
                .filter_map(|k| {
                    std::thread::Builder::new()
                        .name("index-build".into())
                        .spawn_scoped(scope, move || {
                            (k..m)
                                .step_by(threads)
                                .map(|t| (t, self.build_table(t)))
                                .collect::<Vec<_>>()
                        })
                        .ok()
                })
                .collect();
            for t in (0..m).step_by(threads) {
                built[t] = Some(self.build_table(t));
            }
            for h in workers {
                // A worker only panics if build_table does, which would panic here too.
                for (t, table) in h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)) {
                    built[t] = Some(table);
                }
            }
        });
        built
            .into_iter()
            .enumerate()
            .map(|(t, table)| table.unwrap_or_else(|| self.build_table(t)))
            .collect()
    }

    /// Table `t` in the current layout, from the arena by a counting sort (O(n); ~0.3 s for
    /// one table of 10M PDQ codes).
    fn build_table(&self, t: usize) -> Table {
        let lay = &self.layout;
        let (codes, live) = (&self.codes, &self.live);
        let buckets = 1usize << lay.dir_bits;
        let mut dir = vec![0u32; buckets + 1];
        advise_huge_pages(&dir);
        Self::for_each_live(live, |s| dir[lay.key(&codes[s], t) + 1] += 1);
        for k in 0..buckets {
            dir[k + 1] += dir[k];
        }
        let mut at = dir[..buckets].to_vec();
        let mut recs = vec![0u32; self.len];
        advise_huge_pages(&recs);
        Self::for_each_live(live, |s| {
            let code = &codes[s];
            let k = lay.key(code, t);
            recs[at[k] as usize] = lay.record(code, t, s as u32);
            at[k] += 1;
        });
        Table {
            lay: lay.clone(),
            dir,
            recs,
            over: Overflow::default(),
            tombs: 0,
        }
    }

    /// Keeps the tables fast after an update, doing at most one table's work so that no
    /// update holds the index (and the lookups waiting on it) for long: when the size has
    /// left the layout's range a new layout is planned, then one table is moved to it (a
    /// counting sort), or else one table whose pending updates passed its limit is merged
    /// (a sequential pass). Limits differ per table, from `len / 32` to about twice that, so
    /// tables come due at different updates. Lookups are exact whatever mix of layouts the
    /// tables are in: each table is read in its own.
    fn maintain(&mut self) {
        if self.len == 0 {
            return self.rebuild();
        }
        let planned = self.layout.planned;
        if !self.fixed && (self.len > 2 * planned.max(64) || (planned > 4096 && self.len * 2 < planned)) {
            self.layout = self.plan_now();
        }
        if self.layout.subs.len() != self.tables.len() {
            // Another number of tables: the radius split changes for all of them at once, so
            // they are rebuilt together. Happens at COMPACT_FROM and at most once per size
            // doubling below it.
            return self.rebuild();
        }
        let m = self.tables.len();
        let base = self.pending_min.max(self.len / PENDING_SHARE);
        let stale = self.tables.iter().position(|table| !table.lay.same_cut(&self.layout));
        if let Some(t) = stale {
            self.tables[t] = self.build_table(t);
        } else if let Some(table) = self.tables.iter_mut().enumerate().find_map(|(t, table)| {
            let limit = base * (m + t) / m;
            (table.over.len > limit || table.tombs > limit).then_some(table)
        }) {
            table.merge();
        }
    }

    /// Slot holding exactly `(code, id)`, if any.
    fn find_slot(&self, code: &[u64; W], id: u64) -> Option<u32> {
        let table = self.tables.first()?;
        let lay = &table.lay;
        let (key, rec) = (lay.key(code, 0), lay.record(code, 0, 0));
        let mask = lay.slot_mask();
        let hit = |r: u32| {
            let s = r & mask;
            (s != mask && r & !mask == rec && self.codes[s as usize] == *code && self.ids[s as usize] == id)
                .then_some(s)
        };
        if let Some(s) = table.bucket(key).iter().find_map(|&r| hit(r)) {
            return Some(s);
        }
        let mut found = None;
        table.over.for_each(key, |r| found = found.or(hit(r)));
        found
    }

    /// Grows a Vec by ~1/8 when full (bounded slack instead of doubling).
    #[inline]
    fn reserve_small<T>(v: &mut Vec<T>) {
        if v.len() == v.capacity() {
            v.reserve_exact(v.capacity() / 8 + 64);
            advise_huge_pages(v);
        }
    }

    /// Adds `(code, id)`. Inserting an identical `(code, id)` pair again is a
    /// no-op; the same id with a different code (or vice versa) is a new entry.
    pub fn insert(&mut self, code: [u64; W], id: u64) {
        if self.find_slot(&code, id).is_none() {
            self.insert_unique(code, id);
        }
    }

    /// Adds `(code, id)`, which the caller knows is not in the index yet (loading a store
    /// whose keys are unique): skips the duplicate check, a bucket scan of random reads.
    pub fn insert_unique(&mut self, code: [u64; W], id: u64) {
        debug_assert!(self.find_slot(&code, id).is_none(), "insert_unique of a present entry");
        let slot = match self.free.pop() {
            Some(s) => {
                self.codes[s as usize] = code;
                self.ids[s as usize] = id;
                s
            }
            None => {
                let s = u32::try_from(self.ids.len())
                    .ok()
                    .filter(|&s| s < (1 << 31) - 1)
                    .expect("HammingIndex: too many slots");
                Self::reserve_small(&mut self.codes);
                self.codes.push(code);
                Self::reserve_small(&mut self.ids);
                self.ids.push(id);
                if self.live.len() * 64 < self.ids.len() {
                    self.live.push(0);
                }
                s
            }
        };
        let su = slot as usize;
        self.live[su / 64] |= 1 << (su % 64);
        self.len += 1;
        if self.tables.is_empty() {
            return self.rebuild();
        }
        for t in 0..self.tables.len() {
            if slot >= self.tables[t].lay.slot_mask() {
                // The table's records cannot name this slot: rebuild it now, in a layout with
                // room (the arena already holds the new entry). Rare: a layout leaves room
                // for twice the slots it was planned at, and is replaced before that.
                if slot >= self.layout.slot_mask() {
                    self.layout = self.plan_now();
                    if self.layout.subs.len() != self.tables.len() {
                        return self.rebuild();
                    }
                }
                self.tables[t] = self.build_table(t);
                continue;
            }
            let table = &mut self.tables[t];
            let lay = &table.lay;
            let (key, rec, tomb, dir_bits) = (
                lay.key(&code, t),
                lay.record(&code, t, slot),
                lay.slot_mask(),
                lay.dir_bits,
            );
            if let Some(r) = table.bucket_mut(key).iter_mut().find(|r| **r & tomb == tomb) {
                *r = rec;
                table.tombs -= 1;
            } else {
                table.over.insert(key, rec, dir_bits);
            }
        }
        self.maintain();
    }

    /// Removes the entry `(code, id)`; returns whether it was present.
    pub fn remove(&mut self, code: &[u64; W], id: u64) -> bool {
        let Some(slot) = self.find_slot(code, id) else {
            return false;
        };
        for (t, table) in self.tables.iter_mut().enumerate() {
            let lay = &table.lay;
            let (key, rec, tomb) = (lay.key(code, t), lay.record(code, t, slot), lay.slot_mask());
            if let Some(r) = table.bucket_mut(key).iter_mut().find(|r| **r == rec) {
                *r = tomb;
                table.tombs += 1;
            } else {
                let found = table.over.remove(key, rec);
                debug_assert!(found, "slot missing from table {t}");
            }
        }
        let su = slot as usize;
        self.live[su / 64] &= !(1 << (su % 64));
        self.free.push(slot);
        self.len -= 1;
        self.maintain();
        true
    }

    /// The substring radius table `t` is probed within for a query of `radius` (Norouzi et
    /// al., Proposition 1): with `q = radius / m` and `a = radius % m`, the first `a + 1`
    /// tables within `q`, the others within `q - 1` (not at all when `q` is 0). Exact: a code
    /// no table finds differs in at least `s_t + 1` bits in every substring, which sums to
    /// `(a + 1)(q + 1) + (m - a - 1) q = radius + 1`. The first tables are the widest.
    #[inline]
    fn sub_radius(&self, radius: u32, t: usize) -> Option<u32> {
        let m = self.layout.subs.len() as u32;
        let (q, a) = (radius / m, radius % m);
        if t as u32 <= a {
            Some(q)
        } else {
            q.checked_sub(1)
        }
    }

    /// Whether a linear scan is expected to be cheaper than probing for `radius`.
    fn prefer_linear(&self, radius: u32) -> bool {
        let lay = &self.layout;
        if self.tables.is_empty() {
            return true;
        }
        let n = self.len as f64;
        let d = lay.dir_bits;
        let per_bucket = n / (1u64 << d) as f64;
        let (mut probes, mut cands) = (0f64, 0f64);
        for t in 0..lay.subs.len() {
            if let Some(s) = self.sub_radius(radius, t) {
                probes += masks_within(d, s);
                let width = d + lay.inner_mask(t).count_ones();
                cands += n * masks_within(width, s) / (1u64 << width) as f64;
            }
        }
        // In units of one code of a linear scan (PDQ: ~2.5 ns; 64-bit: ~0.6 ns). A bucket
        // probe is a random read or two, a candidate a random read of its code, a record
        // read in sequence about a scanned code's work.
        let (probe, rec, cand) = if W == 1 { (60.0, 2.0, 40.0) } else { (12.0, 0.5, 12.0) };
        probes * (probe + rec * per_bucket) + cands * cand >= n
    }

    /// Every `(id, distance)` with `hamming(code, query) <= radius`, appended
    /// to `out` (any order, no duplicates).
    pub fn range(&self, query: &[u64; W], radius: u32, out: &mut Vec<(u64, u32)>) {
        if self.len == 0 {
            return;
        }
        if self.prefer_linear(radius) {
            return self.range_linear(query, radius, out);
        }
        self.range_probe(query, radius, usize::MAX, out);
    }

    /// Like [`range`](Self::range), but buckets holding more than `max_bucket` records are
    /// not read: every `(id, distance)` within `radius` that shares a substring within its
    /// table's radius with the query in a bucket of at most `max_bucket` records. For codes
    /// whose substrings are far from uniform (local descriptors: a patch split by a straight
    /// edge gives one of a few bit patterns, and 0.1% of the buckets then hold a fifth of the
    /// entries), this bounds a query's work; a code close to the query shares several
    /// substrings with it, so it is still found unless all of them are that common. Always
    /// probes, never scans. With [`new_fixed`](Self::new_fixed), a bucket is a 16-bit
    /// substring value.
    pub fn range_capped(&self, query: &[u64; W], radius: u32, max_bucket: usize, out: &mut Vec<(u64, u32)>) {
        if self.len == 0 {
            return;
        }
        self.range_probe(query, radius, max_bucket, out);
    }

    /// Live records in table `t`'s bucket `key`. Without tombstones (a table just built or
    /// merged) this is the bucket's span, read without touching its records.
    fn bucket_len(&self, t: usize, key: usize) -> usize {
        let table = &self.tables[t];
        let bucket = table.bucket(key);
        let live = if table.tombs == 0 {
            bucket.len()
        } else {
            let tomb = table.lay.slot_mask();
            bucket.iter().filter(|&&r| r & tomb != tomb).count()
        };
        live + table.over.count(key)
    }

    /// Whether table `t`'s bucket `key` holds more than `max_bucket` live records, and so is
    /// not read. `own` holds each table's bucket for the query and its length, counted once
    /// per lookup: most buckets asked about are those.
    #[inline]
    fn over_cap(&self, t: usize, key: usize, max_bucket: usize, own: &[(usize, usize)]) -> bool {
        max_bucket != usize::MAX
            && match own[t] {
                (k, len) if k == key => len,
                _ => self.bucket_len(t, key),
            } > max_bucket
    }

    /// Verifies one candidate found in table `t` and reports it if `t` is the first table
    /// whose substring is within its radius. With a bucket cap, an earlier table only counts
    /// if its bucket for the code was read (`own`: see [`Self::over_cap`]).
    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn verify(
        &self,
        code: &[u64; W],
        slot: u32,
        query: &[u64; W],
        radius: u32,
        t: usize,
        s: u32,
        max_bucket: usize,
        own: &[(usize, usize)],
        out: &mut Vec<(u64, u32)>,
    ) {
        let mut x = [0u64; W];
        let mut d = 0;
        for i in 0..W {
            x[i] = code[i] ^ query[i];
            d += x[i].count_ones();
        }
        // Substring positions are the same in every table's layout.
        let lay = &self.layout;
        // The record's bits cover only part of a wide substring: the rest is checked here.
        if d > radius || lay.sub(&x, t).count_ones() > s {
            return;
        }
        let earlier = (0..t).any(|t2| {
            self.sub_radius(radius, t2)
                .is_some_and(|s2| lay.sub(&x, t2).count_ones() <= s2)
                && !self.over_cap(t2, self.tables[t2].lay.key(code, t2), max_bucket, own)
        });
        if !earlier {
            out.push((self.ids[slot as usize], d));
        }
    }

    /// The multi-index probe path (requires non-empty tables).
    fn range_probe(&self, query: &[u64; W], radius: u32, max_bucket: usize, out: &mut Vec<(u64, u32)>) {
        PROBE_SCRATCH.with_borrow_mut(|scratch| {
            self.range_probe_with(scratch, query, radius, max_bucket, out);
            // A wide lookup in a large index gathers far more: not kept by every thread.
            scratch.candidates.shrink_to(SCRATCH_KEPT);
            scratch.keys.shrink_to(SCRATCH_KEPT);
        });
    }

    /// [`range_probe`](Self::range_probe) with the thread's buffers.
    fn range_probe_with(
        &self,
        scratch: &mut ProbeScratch,
        query: &[u64; W],
        radius: u32,
        max_bucket: usize,
        out: &mut Vec<(u64, u32)>,
    ) {
        let ProbeScratch {
            keys,
            candidates,
            spans,
        } = scratch;
        // Each table's bucket for the query itself, for every table before any is probed:
        // their directory entries, then their first records, are fetched at once, so those
        // misses overlap across tables (a local-descriptor lookup reads only these buckets,
        // every table at substring radius 0). With a cap, their lengths are counted once
        // here, for `verify`.
        let mut own = [(0usize, 0usize); MAX_TABLES];
        let own = &mut own[..self.tables.len()];
        for (t, (table, o)) in self.tables.iter().zip(own.iter_mut()).enumerate() {
            o.0 = table.lay.key(query, t);
            prefetch(&table.dir[o.0]);
        }
        for (table, o) in self.tables.iter().zip(own.iter()) {
            if let Some(r) = table.recs.get(table.dir[o.0] as usize) {
                prefetch(r);
            }
            table.over.prefetch(o.0);
        }
        if max_bucket != usize::MAX {
            for (t, o) in own.iter_mut().enumerate() {
                o.1 = self.bucket_len(t, o.0);
            }
        }
        let own = &*own;
        for (t, table) in self.tables.iter().enumerate() {
            let Some(s) = self.sub_radius(radius, t) else {
                continue;
            };
            let lay = &table.lay;
            let (slot_bits, tomb) = (lay.slot_bits, lay.slot_mask());
            let (qk, qs) = (lay.key(query, t) as u32, lay.sfx(query, t));
            let inner = lay.inner_mask(t);
            // The buckets to read, listed first so that their directory entries and records
            // can be prefetched ahead: their cache misses then overlap instead of adding up.
            keys.clear();
            for_each_mask(lay.dir_bits, s, |mask| keys.push(qk ^ mask));
            candidates.clear();
            // In chunks, in three passes: fetch the chunk's directory entries, then its
            // buckets' records, then read them. Each pass's cache misses are independent, so
            // they overlap (a probe read in one go waits for two misses in a row).
            for chunk in keys.chunks(PROBE_CHUNK) {
                for &k in chunk {
                    prefetch(&table.dir[k as usize]);
                }
                spans.clear();
                for &k in chunk {
                    let (lo, hi) = (table.dir[k as usize] as usize, table.dir[k as usize + 1] as usize);
                    let mut at = lo;
                    while at < hi {
                        prefetch(&table.recs[at]);
                        at += 64 / size_of::<u32>();
                    }
                    if hi > lo {
                        prefetch(&table.recs[hi - 1]);
                    }
                    table.over.prefetch(k as usize);
                    spans.push((lo, hi));
                }
                for (&key, &(lo, hi)) in chunk.iter().zip(spans.iter()) {
                    let key = key as usize;
                    if self.over_cap(t, key, max_bucket, own) {
                        continue;
                    }
                    let w = (key as u32 ^ qk).count_ones();
                    let mut check = |r: u32| {
                        let x = (r >> slot_bits) ^ qs;
                        if r & tomb != tomb && w + (x & inner).count_ones() <= s && w + x.count_ones() <= radius {
                            candidates.push(r & tomb);
                        }
                    };
                    table.recs[lo..hi].iter().for_each(|&r| check(r));
                    table.over.for_each(key, &mut check);
                }
            }
            // Verifying means random reads into the code arena: prefetched well ahead.
            for (i, &slot) in candidates.iter().enumerate() {
                if let Some(&ahead) = candidates.get(i + PREFETCH_AHEAD) {
                    prefetch(&self.codes[ahead as usize]);
                }
                self.verify(
                    &self.codes[slot as usize],
                    slot,
                    query,
                    radius,
                    t,
                    s,
                    max_bucket,
                    own,
                    out,
                );
            }
        }
    }

    /// Brute-force scan with the same contract as [`range`](Self::range).
    pub fn range_linear(&self, query: &[u64; W], radius: u32, out: &mut Vec<(u64, u32)>) {
        for (slot, (code, &id)) in self.codes.iter().zip(&self.ids).enumerate() {
            let d = hamming(code, query);
            if d <= radius && self.is_live(slot) {
                out.push((id, d));
            }
        }
    }

    /// Writes the index for a snapshot (see [`crate::snapshot`]): whether it is fixed, then
    /// the arena as it is (free slots included, so slot numbers stay valid). The tables are
    /// not written: reading rebuilds them by a counting sort, in the layout for the size
    /// read, which takes less time than reading them would (they are larger than the codes).
    pub(crate) fn write_snapshot<O: std::io::Write>(&self, e: &mut Encoder<O>) -> std::io::Result<()> {
        e.u32(W as u32)?;
        e.u8(u8::from(self.fixed))?;
        e.u64(self.len as u64)?;
        e.u64(self.ids.len() as u64)?;
        e.words(&self.ids, u64::to_le_bytes)?;
        for c in &self.codes {
            e.words(c, u64::to_le_bytes)?;
        }
        e.u64(self.live.len() as u64)?;
        e.words(&self.live, u64::to_le_bytes)?;
        e.u64(self.free.len() as u64)?;
        e.words(&self.free, u32::to_le_bytes)?;
        Ok(())
    }

    /// Reads what [`write_snapshot`](Self::write_snapshot) wrote. Checks every count against
    /// the bytes left and the arena's invariants, so that no input can make a later query or
    /// update index out of bounds.
    pub(crate) fn read_snapshot<I: std::io::Read>(d: &mut Decoder<I>) -> Result<Self, SnapshotError> {
        let bad = |what: &str| SnapshotError::Invalid(format!("index of {W}-word codes: {what}"));
        if d.u32()? != W as u32 {
            return Err(bad("code width differs"));
        }
        let fixed = match d.u8()? {
            0 => false,
            1 => true,
            _ => return Err(bad("layout flag")),
        };
        let len = usize::try_from(d.u64()?).map_err(|_| bad("length too large"))?;
        let slots = d.count(8 + 8 * W as u64)?;
        if slots >= (1 << 31) - 1 {
            return Err(bad("too many slots"));
        }
        let ids = d.array(slots, 8, le_u64)?;
        let mut codes = Vec::with_capacity(slots);
        advise_huge_pages(&codes);
        d.records(slots, 8 * W, |b| {
            let mut c = [0u64; W];
            for (w, x) in c.iter_mut().zip(b.chunks_exact(8)) {
                *w = le_u64(x);
            }
            codes.push(c);
        })?;
        let n = d.count(8)?;
        if n != slots.div_ceil(64) {
            return Err(bad("liveness bitset length"));
        }
        let live = d.array(n, 8, le_u64)?;
        let n = d.count(4)?;
        let free = d.array(n, 4, le_u32)?;
        let live_count: usize = live.iter().map(|w| w.count_ones() as usize).sum();
        if live_count != len || len.checked_add(free.len()) != Some(slots) {
            return Err(bad("entry counts disagree"));
        }
        let mut seen = vec![0u64; live.len()];
        for &f in &free {
            let f = f as usize;
            if f >= slots || live[f / 64] >> (f % 64) & 1 == 1 || seen[f / 64] >> (f % 64) & 1 == 1 {
                return Err(bad("free slot list"));
            }
            seen[f / 64] |= 1 << (f % 64);
        }
        drop(seen);
        let mut ix = HammingIndex {
            codes,
            ids,
            live,
            free,
            len,
            ..Self::with_fixed(fixed)
        };
        ix.rebuild();
        Ok(ix)
    }

    /// Approximate heap bytes held, for metrics.
    pub fn heap_bytes(&self) -> usize {
        self.codes.capacity() * size_of::<[u64; W]>()
            + self.ids.capacity() * size_of::<u64>()
            + self.live.capacity() * size_of::<u64>()
            + self.free.capacity() * size_of::<u32>()
            + self.tables.capacity() * size_of::<Table>()
            + self
                .tables
                .iter()
                .map(|t| (t.dir.capacity() + t.recs.capacity()) * 4 + t.over.heap_bytes())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};

    fn brute<const W: usize>(live: &[([u64; W], u64)], q: &[u64; W], r: u32) -> Vec<(u64, u32)> {
        let mut v: Vec<(u64, u32)> = live
            .iter()
            .map(|(c, id)| (*id, hamming(c, q)))
            .filter(|&(_, d)| d <= r)
            .collect();
        v.sort_unstable();
        v
    }

    fn query_sorted<const W: usize>(ix: &HammingIndex<W>, q: &[u64; W], r: u32) -> Vec<(u64, u32)> {
        let mut v = Vec::new();
        ix.range(q, r, &mut v);
        v.sort_unstable();
        v
    }

    /// Checks `range`, `range_linear` and the probe path (bypassing the cost
    /// model) against brute force over the model.
    fn check_all<const W: usize>(ix: &HammingIndex<W>, model: &[([u64; W], u64)], q: &[u64; W], r: u32) {
        let expect = brute(model, q, r);
        let got = query_sorted(ix, q, r);
        assert_eq!(got, expect, "range mismatch r={r}");
        let mut lin = Vec::new();
        ix.range_linear(q, r, &mut lin);
        lin.sort_unstable();
        assert_eq!(lin, expect, "range_linear mismatch r={r}");
        let mut probed = Vec::new();
        ix.range_probe_for_test(q, r, &mut probed);
        probed.sort_unstable();
        assert_eq!(probed, expect, "probe path mismatch r={r}");
        let lay = &ix.layout;
        if ix.tables.is_empty() || r / lay.subs.len() as u32 >= 3 {
            return;
        }
        // Capped: what brute force finds through some table whose bucket is small enough.
        for cap in [0, 1, 2, 5] {
            let bucket_len = |t: usize, code: &[u64; W]| {
                let tl = &ix.tables[t].lay;
                model.iter().filter(|(c, _)| tl.key(c, t) == tl.key(code, t)).count()
            };
            let mut want: Vec<(u64, u32)> = model
                .iter()
                .filter(|(code, _)| {
                    hamming(code, q) <= r
                        && (0..lay.subs.len()).any(|t| {
                            let within = ix
                                .sub_radius(r, t)
                                .is_some_and(|s| (lay.sub(code, t) ^ lay.sub(q, t)).count_ones() <= s);
                            within && bucket_len(t, code) <= cap
                        })
                })
                .map(|(code, id)| (*id, hamming(code, q)))
                .collect();
            want.sort_unstable();
            let mut capped = Vec::new();
            ix.range_capped(q, r, cap, &mut capped);
            capped.sort_unstable();
            assert_eq!(capped, want, "capped mismatch r={r} cap={cap}");
        }
    }

    impl<const W: usize> HammingIndex<W> {
        /// The MIH probe path without the linear fallback (test only).
        fn range_probe_for_test(&self, query: &[u64; W], radius: u32, out: &mut Vec<(u64, u32)>) {
            if self.tables.is_empty() || radius / self.layout.subs.len() as u32 >= 5 {
                // Probing is exact for any radius but slow in debug tests.
                return self.range_linear(query, radius, out);
            }
            self.range_probe(query, radius, usize::MAX, out);
        }

        fn check_invariants(&self) {
            assert_eq!(self.tables.is_empty(), self.len == 0);
            for (t, table) in self.tables.iter().enumerate() {
                let lay = &table.lay;
                let tomb = lay.slot_mask();
                assert_eq!(table.dir.len(), (1 << lay.dir_bits) + 1);
                assert_eq!(table.dir.last().copied(), Some(table.recs.len() as u32));
                let mut seen = vec![false; self.ids.len()];
                let mut tombs = 0;
                for key in 0..1usize << lay.dir_bits {
                    let mut recs: Vec<u32> = table.bucket(key).to_vec();
                    table.over.for_each(key, |r| recs.push(r));
                    for r in recs {
                        if r & tomb == tomb {
                            tombs += 1;
                            continue;
                        }
                        let s = (r & tomb) as usize;
                        assert!(self.is_live(s) && !seen[s], "slot {s} twice or dead in table {t}");
                        seen[s] = true;
                        let code = &self.codes[s];
                        assert_eq!(lay.key(code, t), key);
                        assert_eq!(lay.record(code, t, s as u32), r);
                    }
                }
                assert_eq!(tombs, table.tombs);
                assert_eq!(seen.iter().filter(|&&x| x).count(), self.len, "table {t}");
            }
            for s in 0..self.ids.len() {
                if self.is_live(s) {
                    assert_eq!(self.find_slot(&self.codes[s], self.ids[s]), Some(s as u32));
                }
            }
            assert_eq!(self.ids.len(), self.len + self.free.len());
        }
    }

    #[derive(Debug, Clone)]
    enum Op<const W: usize> {
        Insert([u64; W], u64),
        /// Remove the live entry at this index (mod len), or an absent one.
        Remove(usize),
        RemoveAbsent([u64; W], u64),
        /// Query near a live entry (index mod len) with these bit flips.
        QueryNear(usize, Vec<u16>, u32),
        Query([u64; W], u32),
    }

    fn code_strategy<const W: usize>() -> impl Strategy<Value = [u64; W]> {
        prop::array::uniform::<_, W>(any::<u64>())
    }

    fn op_strategy<const W: usize>(radii: Vec<u32>) -> impl Strategy<Value = Op<W>> {
        let bits = (W * 64) as u16;
        let r1 = prop::sample::select(radii.clone());
        let r2 = prop::sample::select(radii);
        prop_oneof![
            4 => (code_strategy::<W>(), 0u64..50).prop_map(|(c, id)| Op::Insert(c, id)),
            2 => any::<usize>().prop_map(Op::Remove),
            1 => (code_strategy::<W>(), 0u64..50).prop_map(|(c, id)| Op::RemoveAbsent(c, id)),
            3 => (any::<usize>(), prop::collection::vec(0..bits, 0..40), r1)
                .prop_map(|(i, f, r)| Op::QueryNear(i, f, r)),
            1 => (code_strategy::<W>(), r2).prop_map(|(c, r)| Op::Query(c, r)),
        ]
    }

    fn run_ops<const W: usize>(ops: Vec<Op<W>>, fixed: bool, pending: usize) {
        let mut ix = if fixed {
            HammingIndex::<W>::new_fixed()
        } else {
            HammingIndex::<W>::new()
        };
        ix.pending_min = pending;
        let mut model: Vec<([u64; W], u64)> = Vec::new();
        for op in ops {
            match op {
                Op::Insert(c, id) => {
                    ix.insert(c, id);
                    if !model.contains(&(c, id)) {
                        model.push((c, id));
                    }
                    // Also insert a near-copy sometimes to create clusters.
                    if id % 3 == 0 {
                        let mut c2 = c;
                        c2[0] ^= 1 << (id % 64);
                        ix.insert(c2, id + 1000);
                        if !model.contains(&(c2, id + 1000)) {
                            model.push((c2, id + 1000));
                        }
                    }
                }
                Op::Remove(i) => {
                    if !model.is_empty() {
                        let (c, id) = model.swap_remove(i % model.len());
                        assert!(ix.remove(&c, id));
                        assert!(!ix.remove(&c, id));
                    }
                }
                Op::RemoveAbsent(c, id) => {
                    let present = model.contains(&(c, id));
                    assert_eq!(ix.remove(&c, id), present);
                    model.retain(|e| *e != (c, id));
                }
                Op::QueryNear(i, flips, r) => {
                    if !model.is_empty() {
                        let mut q = model[i % model.len()].0;
                        for f in flips {
                            q[f as usize / 64] ^= 1 << (f % 64);
                        }
                        check_all(&ix, &model, &q, r);
                    }
                }
                Op::Query(q, r) => check_all(&ix, &model, &q, r),
            }
            assert_eq!(ix.len(), model.len());
        }
        ix.check_invariants();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn prop_matches_brute_force_w1(
            ops in prop::collection::vec(op_strategy::<1>((0..=16).collect()), 1..300),
            fixed in any::<bool>(),
            pending in 1usize..40,
        ) {
            run_ops(ops, fixed, pending);
        }

        #[test]
        fn prop_matches_brute_force_w4(
            ops in prop::collection::vec(op_strategy::<4>(vec![0, 1, 4, 8, 12, 15, 31, 40]), 1..300),
            fixed in any::<bool>(),
            pending in 1usize..40,
        ) {
            run_ops(ops, fixed, pending);
        }
    }

    #[test]
    fn mask_enumeration_counts() {
        for width in [1, 4, 16, 19] {
            for s in 0..=width.min(4) {
                let mut n = 0u64;
                let mut seen = std::collections::HashSet::new();
                for_each_mask(width, s, |m| {
                    assert!(u64::from(m) < 1 << width);
                    assert!(m.count_ones() <= s);
                    assert!(seen.insert(m));
                    n += 1;
                });
                assert_eq!(n as f64, masks_within(width, s), "width={width} s={s}");
            }
        }
        assert_eq!(masks_within(16, 16), 65536.0);
    }

    /// The layouts the docs describe: 16-bit buckets for a fixed index; at 10M codes, 3 and 9
    /// substrings, 19 directory bits, 25-bit slots and 7 filter bits a record.
    #[test]
    fn layout_follows_size() {
        let fixed = Layout::plan(256, true, 10_000_000, 10_000_000);
        assert_eq!((fixed.subs.len(), fixed.dir_bits), (16, 16));
        assert!(fixed.subs.iter().all(|s| s.1 == 16));
        for (bits, m) in [(64, 3), (256, 9)] {
            let lay = Layout::plan(bits, false, 10_000_000, 10_000_000);
            assert_eq!(lay.subs.len(), m);
            assert_eq!(lay.subs.iter().map(|s| s.1).sum::<u32>(), bits);
            assert!(lay
                .subs
                .windows(2)
                .all(|w| w[0].0 + w[0].1 == w[1].0 && w[0].1 >= w[1].1));
            assert_eq!((lay.dir_bits, lay.slot_bits, lay.sfx_bits), (19, 25, 7));
        }
        // Below COMPACT_FROM, Norouzi's m = b / log2 n, within [2W + 1, b / 16].
        assert_eq!(Layout::tables_for(256, 1_000_000), 13);
        assert_eq!(Layout::tables_for(256, 100_000), 15);
        assert_eq!(Layout::tables_for(256, 1000), 16);
        assert_eq!(Layout::tables_for(256, COMPACT_FROM), 9);
        assert_eq!(Layout::tables_for(64, 1_000_000), 3);
        assert_eq!(Layout::tables_for(64, 100_000), 4);
        let small = Layout::plan(64, false, 1000, 1000);
        assert_eq!((small.dir_bits, small.slot_bits), (5, 11));
        // Wrapping bit extraction: the record bits after the last substring's key come from
        // the start of the code.
        let code = [0x8000_0000_0000_0001u64];
        assert_eq!(bits(&code, 63, 2), 0b11);
        let wide = [1u64 << 63, 1, 0, 1 << 63];
        assert_eq!(bits(&wide, 63, 2), 0b11);
        assert_eq!(bits(&wide, 255, 2), 0b01);
    }

    /// Tables built on several cores are the tables built on one.
    #[test]
    fn parallel_table_build_equals_sequential() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut ix = HammingIndex::<1>::new();
        for id in 0..(PARALLEL_BUILD_FROM as u64 + 1000) {
            ix.insert_unique([rng.gen()], id);
        }
        let parallel = ix.build_tables();
        assert_eq!(parallel.len(), ix.layout.subs.len());
        for (t, table) in parallel.iter().enumerate() {
            let one = ix.build_table(t);
            assert!(table.dir == one.dir && table.recs == one.recs, "table {t} differs");
        }
    }

    /// Growing through layouts moves one table per update (no update rebuilds the whole
    /// index), and lookups stay exact while tables are in different layouts.
    #[test]
    fn relayout_moves_one_table_per_update_and_stays_exact() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(18);
        let mut ix = HammingIndex::<4>::new();
        let mut model = Vec::new();
        let (mut mixed_states, mut moved_max) = (0, 0);
        for id in 0..3000u64 {
            let c: [u64; 4] = std::array::from_fn(|_| rng.gen());
            let before: Vec<Layout> = ix.tables.iter().map(|t| t.lay.clone()).collect();
            ix.insert(c, id);
            model.push((c, id));
            if before.len() == ix.tables.len() {
                let moved = before
                    .iter()
                    .zip(&ix.tables)
                    .filter(|(a, b)| !a.same_cut(&b.lay))
                    .count();
                moved_max = moved_max.max(moved);
            }
            if ix.tables.iter().any(|t| !t.lay.same_cut(&ix.tables[0].lay)) {
                mixed_states += 1;
                let mut q = model[rng.gen_range(0..model.len())].0;
                q[0] ^= 0b1011;
                check_all(&ix, &model, &q, 31);
                ix.check_invariants();
            }
        }
        assert!(mixed_states > 0, "no update left the tables in mixed layouts");
        assert_eq!(moved_max, 1, "an update moved more than one table to a new layout");
    }

    /// Large random index: exercises the MIH path through `range` itself
    /// (the cost model picks probing at this size).
    fn large_random<const W: usize>(n: usize, radii: &[u32], seed: u64) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut ix = HammingIndex::<W>::new();
        let mut model = Vec::new();
        for id in 0..n as u64 {
            let mut c = [0u64; W];
            for w in c.iter_mut() {
                *w = rng.gen();
            }
            ix.insert(c, id);
            model.push((c, id));
        }
        for _ in 0..40 {
            let mut q = model[rng.gen_range(0..model.len())].0;
            for _ in 0..rng.gen_range(0..=radii[radii.len() - 1]) {
                let b = rng.gen_range(0..W * 64);
                q[b / 64] ^= 1 << (b % 64);
            }
            for &r in radii {
                if W == 1 && n >= 20_000 && r <= 8 {
                    assert!(!ix.prefer_linear(r), "expected probe path r={r}");
                }
                check_all(&ix, &model, &q, r);
            }
        }
        // Remove half and re-check.
        for i in (0..n).step_by(2) {
            let (c, id) = model[i];
            assert!(ix.remove(&c, id));
        }
        let model: Vec<_> = model.into_iter().skip(1).step_by(2).collect();
        ix.check_invariants();
        for _ in 0..20 {
            let mut q = model[rng.gen_range(0..model.len())].0;
            q[0] ^= 0b1011;
            for &r in radii {
                check_all(&ix, &model, &q, r);
            }
        }
    }

    #[test]
    fn large_random_w1() {
        large_random::<1>(30_000, &[0, 1, 3, 4, 7, 8, 11, 12, 16, 20], 1);
    }

    #[test]
    fn large_random_w4() {
        large_random::<4>(20_000, &[0, 1, 4, 8, 12, 16, 31, 40], 2);
    }

    #[test]
    fn clustered_codes_exact_no_duplicates() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let base = [0x0123_4567_89ab_cdefu64, 0xdead_beef_0000_ffff, 0, u64::MAX];
        let mut ix = HammingIndex::<4>::new();
        let mut model = Vec::new();
        for id in 0..3000u64 {
            let mut c = base;
            for _ in 0..rng.gen_range(0..6) {
                let b = rng.gen_range(0..256);
                c[b / 64] ^= 1 << (b % 64);
            }
            ix.insert(c, id);
            model.push((c, id));
        }
        // Exact duplicates of the base under distinct ids.
        for id in 5000..5050u64 {
            ix.insert(base, id);
            model.push((base, id));
        }
        for r in [0, 1, 2, 4, 8, 12, 15, 16, 31, 40, 64] {
            let mut q = base;
            q[2] ^= 0b111;
            check_all(&ix, &model, &q, r);
            let got = query_sorted(&ix, &q, r);
            let mut ids: Vec<u64> = got.iter().map(|e| e.0).collect();
            ids.dedup();
            assert_eq!(ids.len(), got.len(), "duplicates at r={r}");
        }
        // W=1 cluster as well.
        let mut ix1 = HammingIndex::<1>::new_fixed();
        let mut m1 = Vec::new();
        for id in 0..5000u64 {
            let c = [0xffff_0000_aaaa_5555u64 ^ (1u64 << (id % 64)) ^ (id & 0xf)];
            ix1.insert(c, id);
            m1.push((c, id));
        }
        for r in 0..=16 {
            check_all(&ix1, &m1, &[0xffff_0000_aaaa_5555], r);
        }
        ix.check_invariants();
        ix1.check_invariants();
    }

    #[test]
    fn remove_absent_idempotent_insert_len_and_slot_reuse() {
        let mut ix = HammingIndex::<1>::new();
        assert!(ix.is_empty());
        assert!(!ix.remove(&[1], 1));
        ix.insert([1], 1);
        ix.insert([1], 1);
        assert_eq!(ix.len(), 1);
        let mut out = Vec::new();
        ix.range(&[1], 0, &mut out);
        assert_eq!(out, vec![(1, 0)]);
        // Same id, different code; same code, different id: distinct entries.
        ix.insert([2], 1);
        ix.insert([1], 2);
        assert_eq!(ix.len(), 3);
        assert!(!ix.remove(&[3], 1));
        assert!(!ix.remove(&[1], 3));
        assert!(ix.remove(&[1], 1));
        assert!(!ix.remove(&[1], 1));
        assert_eq!(ix.len(), 2);
        let slots = ix.ids.len();
        ix.insert([9], 9);
        ix.check_invariants();
        assert_eq!(ix.ids.len(), slots, "free slot reused");
        assert_eq!(ix.len(), 3);
        out.clear();
        ix.range(&[1], 64, &mut out);
        out.sort_unstable();
        assert_eq!(out, vec![(1, 2), (2, 0), (9, 1)]);
        for (c, id) in [([2], 1), ([1], 2), ([9], 9)] {
            assert!(ix.remove(&c, id));
        }
        assert!(ix.is_empty());
        assert!(ix.tables.is_empty(), "an empty index holds no tables");
        ix.check_invariants();
        out.clear();
        ix.range(&[1], 64, &mut out);
        assert!(out.is_empty());
    }

    fn snapshot_round_trip<const W: usize>(ix: &HammingIndex<W>) -> HammingIndex<W> {
        let mut e = Encoder::new(Vec::new());
        ix.write_snapshot(&mut e).unwrap();
        let (buf, _, n) = e.finish().unwrap();
        assert_eq!(n as usize, buf.len());
        let mut d = Decoder::new(buf.as_slice(), n - 8);
        let back = HammingIndex::<W>::read_snapshot(&mut d).expect("snapshot reads back");
        d.finish().expect("read to the end, checksum verifies");
        back.check_invariants();
        back
    }

    /// An index read back from a snapshot answers every query as the original does, and
    /// keeps working under inserts and removals (free slots included).
    fn snapshot_matches_original<const W: usize>(n: u64, radii: &[u32], seed: u64) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let code = |rng: &mut rand::rngs::StdRng| {
            let mut c = [0u64; W];
            c.iter_mut().for_each(|w| *w = rng.gen());
            c
        };
        // Never inserted: the tables are not allocated yet.
        let empty = snapshot_round_trip(&HammingIndex::<W>::new());
        assert!(empty.is_empty() && empty.tables.is_empty());
        let mut ix = HammingIndex::<W>::new();
        let mut model = Vec::new();
        for id in 0..n {
            let c = code(&mut rng);
            ix.insert(c, id);
            model.push((c, id));
            // Near-duplicates, so that queries find clusters.
            if id % 5 == 0 {
                let mut c2 = c;
                c2[0] ^= 0b101;
                ix.insert(c2, id + n);
                model.push((c2, id + n));
            }
        }
        // Leave free slots behind.
        for _ in 0..model.len() / 7 {
            let (c, id) = model.swap_remove(rng.gen_range(0..model.len()));
            assert!(ix.remove(&c, id));
        }
        let mut back = snapshot_round_trip(&ix);
        assert_eq!(
            (back.len(), back.ids.len(), back.free.len()),
            (ix.len(), ix.ids.len(), ix.free.len())
        );
        assert_eq!(back.layout.subs, ix.layout.subs);
        assert_eq!(back.fixed, ix.fixed);
        let queries: Vec<[u64; W]> = (0..60)
            .map(|i| {
                if i % 3 == 0 {
                    code(&mut rng)
                } else {
                    let mut q = model[rng.gen_range(0..model.len())].0;
                    for _ in 0..rng.gen_range(0..=*radii.last().unwrap()) {
                        let b = rng.gen_range(0..W * 64);
                        q[b / 64] ^= 1 << (b % 64);
                    }
                    q
                }
            })
            .collect();
        for q in &queries {
            for &r in radii {
                assert_eq!(query_sorted(&back, q, r), query_sorted(&ix, q, r), "r={r}");
                check_all(&back, &model, q, r);
            }
        }
        // Both keep working the same under updates: the free list and bucket growth.
        for id in 0..200u64 {
            let c = code(&mut rng);
            ix.insert(c, 10 * n + id);
            back.insert(c, 10 * n + id);
            model.push((c, 10 * n + id));
            let (c, id) = model.swap_remove(rng.gen_range(0..model.len()));
            assert!(ix.remove(&c, id));
            assert!(back.remove(&c, id));
            assert!(!back.remove(&c, id));
        }
        back.check_invariants();
        for q in &queries {
            for &r in radii {
                check_all(&back, &model, q, r);
            }
        }
        assert_eq!(ix.ids.len(), back.ids.len(), "the same slots reused");
    }

    #[test]
    fn snapshot_round_trip_w1() {
        snapshot_matches_original::<1>(20_000, &[0, 3, 8, 12], 11);
    }

    #[test]
    fn snapshot_round_trip_w4() {
        snapshot_matches_original::<4>(5_000, &[0, 8, 16, 31], 12);
    }

    /// Whatever the bytes, reading a snapshot fails cleanly (or, for a flip the structure
    /// cannot see, reads back an index the checksum then rejects): never a panic, never an
    /// allocation past the file's size.
    #[test]
    fn snapshot_corruption_is_an_error_not_a_panic() {
        let mut ix = HammingIndex::<1>::new();
        for id in 0..300u64 {
            ix.insert([id.wrapping_mul(0x9E37_79B9_7F4A_7C15)], id);
        }
        for id in (0..300u64).step_by(3) {
            ix.remove(&[id.wrapping_mul(0x9E37_79B9_7F4A_7C15)], id);
        }
        let mut e = Encoder::new(Vec::new());
        ix.write_snapshot(&mut e).unwrap();
        let (buf, _, n) = e.finish().unwrap();
        let read = |b: &[u8]| -> Result<(), SnapshotError> {
            let mut d = Decoder::new(b, (b.len() as u64).saturating_sub(8));
            HammingIndex::<1>::read_snapshot(&mut d)?;
            d.finish().map(|_| ())
        };
        read(&buf).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        // The header and arena bytes, every one; then random positions in the tables.
        let positions: Vec<usize> = (0..4096.min(buf.len()))
            .chain((0..2000).map(|_| rng.gen_range(0..buf.len())))
            .collect();
        for pos in positions {
            let mut bad = buf.clone();
            bad[pos] ^= 1 << rng.gen_range(0..8);
            assert!(read(&bad).is_err(), "flipped byte {pos} went unnoticed");
        }
        for cut in [0, 1, 7, 8, 12, 100, buf.len() / 2, n as usize - 9, n as usize - 1] {
            assert!(read(&buf[..cut]).is_err(), "cut at {cut}");
        }
        // Huge counts are refused before anything is allocated for them.
        let mut huge = buf.clone();
        huge[13..21].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(read(&huge), Err(SnapshotError::Invalid(_))));
    }

    #[test]
    fn empty_index_queries() {
        let ix = HammingIndex::<4>::new();
        let mut out = Vec::new();
        ix.range(&[0; 4], 256, &mut out);
        ix.range_linear(&[0; 4], 256, &mut out);
        assert!(out.is_empty());
        assert_eq!(ix.heap_bytes(), 0);
    }
}
