//! Exact in-memory Hamming range index (multi-index hashing, Norouzi et al.).
//!
//! A code of `W` 64-bit words is split into `4 * W` disjoint 16-bit substrings,
//! one hash table per substring position. Each table has 65,536 buckets of slot
//! numbers into a dense arena of codes and ids.
//!
//! Pigeonhole: if `hamming(code, query) <= r` then for at least one table `t`
//! the substrings differ in at most `s = floor(r / (4 * W))` bits. A query
//! therefore probes, in every table, all keys within distance `s` of the query's
//! substring and verifies each candidate with the full distance. A candidate
//! found in table `t` is reported only if no earlier table `t' < t` also has
//! substring distance `<= s`, which makes results duplicate-free without a
//! visited set. When probing would cost more than a scan (large radius or a
//! tiny index) the query falls back to a linear scan; results are always exact.
//!
//! Insert and remove are O(bucket size); there are no rebuilds.

use std::mem::size_of;

use crate::codec::{le_u16, le_u32, le_u64, Decoder, Encoder, SnapshotError};

/// Bits per substring / table key.
const SUB_BITS: usize = 16;
/// Buckets per table.
const BUCKETS: usize = 1 << SUB_BITS;
/// `CUM_BINOM[s]` = number of 16-bit masks with popcount `<= s`.
const CUM_BINOM: [u64; 17] = {
    let mut out = [0u64; 17];
    let mut c = 1u64; // C(16, k)
    let mut acc = 0u64;
    let mut k = 0;
    while k <= 16 {
        acc += c;
        out[k] = acc;
        c = c * (16 - k as u64) / (k as u64 + 1);
        k += 1;
    }
    out
};

/// How many candidates ahead `range_probe` prefetches.
const PREFETCH_AHEAD: usize = 16;

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

/// Hamming distance between two `W`-word codes.
#[inline]
pub fn hamming<const W: usize>(a: &[u64; W], b: &[u64; W]) -> u32 {
    let mut d = 0;
    for i in 0..W {
        d += (a[i] ^ b[i]).count_ones();
    }
    d
}

/// The `t`-th 16-bit substring of `code` (table key).
#[inline]
fn substring<const W: usize>(code: &[u64; W], t: usize) -> usize {
    ((code[t / 4] >> ((t % 4) * SUB_BITS)) & 0xFFFF) as usize
}

/// Calls `f` with every 16-bit mask of popcount `<= max_weight`, lowest weight
/// first, without allocating (Gosper's hack per weight).
#[inline]
fn for_each_mask(max_weight: u32, mut f: impl FnMut(usize)) {
    f(0);
    for k in 1..=max_weight.min(SUB_BITS as u32) {
        let mut m: u32 = (1u32 << k) - 1;
        while m < (1u32 << SUB_BITS) {
            f(m as usize);
            let c = m & m.wrapping_neg();
            let r = m + c;
            m = (((r ^ m) >> 2) >> c.trailing_zeros()) | r;
        }
    }
}

/// For an inline 64-bit code found in table `t`: the positions of the three substrings its
/// record holds, in order.
const OTHER_SUBSTRINGS: [[usize; 3]; 4] = [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]];

/// Growable list of fixed-size records of `u16` words (a record is a slot number in two
/// words, then, for inline codes, the code's other substrings). Words 0 and 1 of the boxed
/// slice hold the record count. 16 bytes inline; an empty bucket owns no heap memory.
#[derive(Default)]
struct Bucket(Box<[u16]>);

/// The slot number of a record.
#[inline]
fn rec_slot(r: &[u16]) -> u32 {
    u32::from(r[0]) | u32::from(r[1]) << 16
}

impl Bucket {
    #[inline]
    fn len(&self) -> usize {
        match self.0.get(..2) {
            Some(h) => usize::from(h[0]) | usize::from(h[1]) << 16,
            None => 0,
        }
    }

    #[inline]
    fn set_len(&mut self, n: usize) {
        self.0[0] = n as u16;
        self.0[1] = (n >> 16) as u16;
    }

    /// The records, `stride` words each, back to back.
    #[inline]
    fn records(&self, stride: usize) -> &[u16] {
        match self.len() {
            0 => &[],
            n => &self.0[2..2 + n * stride],
        }
    }

    #[inline]
    fn capacity(&self, stride: usize) -> usize {
        self.0.len().saturating_sub(2) / stride
    }

    /// Heap words (u16) currently held.
    #[inline]
    fn heap_words(&self) -> usize {
        self.0.len()
    }

    /// Re-allocates to exactly `cap` records (`cap >= len`).
    fn set_capacity(&mut self, cap: usize, stride: usize) {
        let n = self.len();
        debug_assert!(cap >= n);
        if cap == 0 {
            self.0 = Box::default();
            return;
        }
        let mut v = Vec::with_capacity(2 + cap * stride);
        if n == 0 {
            v.extend_from_slice(&[0, 0]);
        } else {
            v.extend_from_slice(&self.0[..2 + n * stride]);
        }
        v.resize(2 + cap * stride, 0);
        self.0 = v.into_boxed_slice();
    }

    /// Appends a record. Growth is by max(4, cap/8) records: O(bucket size) per insert at
    /// worst, with little unused capacity.
    #[inline]
    fn push(&mut self, rec: &[u16]) {
        let stride = rec.len();
        let (n, cap) = (self.len(), self.capacity(stride));
        if n == cap {
            self.set_capacity(cap + 4.max(cap / 8), stride);
        }
        self.0[2 + n * stride..2 + (n + 1) * stride].copy_from_slice(rec);
        self.set_len(n + 1);
    }

    /// Swap-removes the record of `slot`; shrinks when mostly empty.
    fn remove_slot(&mut self, slot: u32, stride: usize) -> bool {
        let n = self.len();
        let Some(pos) = self
            .records(stride)
            .chunks_exact(stride)
            .position(|r| rec_slot(r) == slot)
        else {
            return false;
        };
        let last = 2 + (n - 1) * stride;
        self.0.copy_within(last..last + stride, 2 + pos * stride);
        let n = n - 1;
        if n == 0 {
            self.0 = Box::default();
            return true;
        }
        self.set_len(n);
        let cap = self.capacity(stride);
        if cap > 8 && n * 2 < cap {
            self.set_capacity(n + n / 8, stride);
        }
        true
    }
}

/// Exact Hamming-radius index over W-word (64*W-bit) codes.
pub struct HammingIndex<const W: usize> {
    /// Slot arena: code per slot (stale for free slots). Empty for 64-bit codes, which live
    /// inline in the tables.
    codes: Vec<[u64; W]>,
    /// Slot arena: id per slot (stale for free slots).
    ids: Vec<u64>,
    /// Liveness bitset over slots.
    live: Vec<u64>,
    /// Free slots, reused by `insert`.
    free: Vec<u32>,
    /// Number of live entries.
    len: usize,
    /// `4 * W` tables of `BUCKETS` buckets each, flattened; empty until the
    /// first insert.
    tables: Vec<Bucket>,
    /// Sum of `heap_words()` over all buckets.
    bucket_words: usize,
}

impl<const W: usize> Default for HammingIndex<W> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const W: usize> HammingIndex<W> {
    /// Number of tables (16-bit substrings per code).
    const TABLES: usize = 4 * W;
    /// 64-bit codes are kept inline in every table (the three substrings the bucket key does
    /// not give: 6 bytes), so that verifying a candidate reads the bucket sequentially instead
    /// of jumping into the arena; candidates outnumber results by orders of magnitude, and
    /// those jumps were most of a query's time. Wider codes would cost too much memory inline.
    const INLINE: bool = W == 1;
    /// Words per record: the slot, then the inline substrings.
    const STRIDE: usize = if Self::INLINE { 5 } else { 2 };

    /// Creates an empty index. Tables are allocated lazily on first insert.
    pub fn new() -> Self {
        assert!(W > 0, "HammingIndex requires W >= 1");
        Self {
            codes: Vec::new(),
            ids: Vec::new(),
            live: Vec::new(),
            free: Vec::new(),
            len: 0,
            tables: Vec::new(),
            bucket_words: 0,
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

    #[inline]
    fn bucket(&self, t: usize, key: usize) -> &Bucket {
        &self.tables[t * BUCKETS + key]
    }

    /// The record of `(code, slot)` in table `t`.
    #[inline]
    fn record(code: &[u64; W], t: usize, slot: u32) -> [u16; 5] {
        let mut r = [slot as u16, (slot >> 16) as u16, 0, 0, 0];
        if Self::INLINE {
            for (k, &j) in OTHER_SUBSTRINGS[t].iter().enumerate() {
                r[2 + k] = substring(code, j) as u16;
            }
        }
        r
    }

    /// The code of a record found under `key` in table `t`.
    #[inline]
    fn code_of(&self, rec: &[u16], t: usize, key: usize) -> [u64; W] {
        if Self::INLINE {
            let [a, b, c2] = OTHER_SUBSTRINGS[t];
            let c = (key as u64) << (t * SUB_BITS)
                | u64::from(rec[2]) << (a * SUB_BITS)
                | u64::from(rec[3]) << (b * SUB_BITS)
                | u64::from(rec[4]) << (c2 * SUB_BITS);
            let mut out = [0u64; W];
            out[0] = c;
            out
        } else {
            self.codes[rec_slot(rec) as usize]
        }
    }

    /// Slot holding exactly `(code, id)`, if any.
    fn find_slot(&self, code: &[u64; W], id: u64) -> Option<u32> {
        if self.tables.is_empty() {
            return None;
        }
        let key = substring(code, 0);
        self.bucket(0, key)
            .records(Self::STRIDE)
            .chunks_exact(Self::STRIDE)
            .find(|r| self.code_of(r, 0, key) == *code && self.ids[rec_slot(r) as usize] == id)
            .map(rec_slot)
    }

    /// Grows a Vec by ~1/8 when full (bounded slack instead of doubling).
    #[inline]
    fn reserve_small<T>(v: &mut Vec<T>) {
        if v.len() == v.capacity() {
            v.reserve_exact(v.capacity() / 8 + 64);
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
        if self.tables.is_empty() {
            self.tables = (0..Self::TABLES * BUCKETS).map(|_| Bucket::default()).collect();
        }
        let slot = match self.free.pop() {
            Some(s) => {
                if !Self::INLINE {
                    self.codes[s as usize] = code;
                }
                self.ids[s as usize] = id;
                s
            }
            None => {
                let s = u32::try_from(self.ids.len())
                    .ok()
                    .filter(|&s| s != u32::MAX)
                    .expect("HammingIndex: too many slots");
                if !Self::INLINE {
                    Self::reserve_small(&mut self.codes);
                    self.codes.push(code);
                }
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
        for t in 0..Self::TABLES {
            let b = &mut self.tables[t * BUCKETS + substring(&code, t)];
            let before = b.heap_words();
            b.push(&Self::record(&code, t, slot)[..Self::STRIDE]);
            self.bucket_words = self.bucket_words + b.heap_words() - before;
        }
        self.len += 1;
    }

    /// Removes the entry `(code, id)`; returns whether it was present.
    pub fn remove(&mut self, code: &[u64; W], id: u64) -> bool {
        let Some(slot) = self.find_slot(code, id) else {
            return false;
        };
        for t in 0..Self::TABLES {
            let b = &mut self.tables[t * BUCKETS + substring(code, t)];
            let before = b.heap_words();
            let found = b.remove_slot(slot, Self::STRIDE);
            debug_assert!(found, "slot missing from table {t}");
            self.bucket_words = self.bucket_words + b.heap_words() - before;
        }
        let su = slot as usize;
        self.live[su / 64] &= !(1 << (su % 64));
        self.free.push(slot);
        self.len -= 1;
        true
    }

    /// The substring radius table `t` is probed within for a query of `radius` (Norouzi et
    /// al., Proposition 1): with `q = radius / TABLES` and `a = radius % TABLES`, the first
    /// `a + 1` tables within `q`, the others within `q - 1` (not at all when `q` is 0). Exact:
    /// a code no table finds differs in at least `s_t + 1` bits in every substring, which sums
    /// to `(a + 1)(q + 1) + (TABLES - a - 1) q = radius + 1`. Against `q` everywhere this
    /// probes up to 3x fewer buckets (64-bit radius 8: 188 instead of 548).
    #[inline]
    fn sub_radius(radius: u32, t: usize) -> Option<u32> {
        let tables = Self::TABLES as u32;
        let (q, a) = (radius / tables, radius % tables);
        if t as u32 <= a {
            Some(q)
        } else {
            q.checked_sub(1)
        }
    }

    /// Whether a linear scan is expected to be cheaper than probing for `radius`.
    fn prefer_linear(&self, radius: u32) -> bool {
        if radius / Self::TABLES as u32 >= SUB_BITS as u32 {
            return true;
        }
        let n = self.len as u64;
        let probes: u64 = (0..Self::TABLES)
            .filter_map(|t| Self::sub_radius(radius, t))
            .map(|s| CUM_BINOM[s as usize])
            .sum();
        // Expected candidates (with the usual uniformity assumption).
        let cands = n.saturating_mul(probes) / BUCKETS as u64;
        // In units of one code of a sequential scan. Random bucket probes cost several scan
        // steps each, and so do candidate verifications that jump into the arena; inline
        // candidates are read in sequence. An inline scan walks every bucket of table 0.
        // Wide codes: a profile of hash-only checks (PDQ radius 40, so 2,192 probes, on an
        // index of 11,000 codes) put a probe at ~31 ns and a scanned code at ~2.5 ns.
        let (probe_cost, cand_cost, scan_cost) = if Self::INLINE {
            (2, 1, n + BUCKETS as u64)
        } else {
            (12, 12, n)
        };
        probes
            .saturating_mul(probe_cost)
            .saturating_add(cands.saturating_mul(cand_cost))
            >= scan_cost
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
    /// probes, never scans.
    pub fn range_capped(&self, query: &[u64; W], radius: u32, max_bucket: usize, out: &mut Vec<(u64, u32)>) {
        if self.len == 0 {
            return;
        }
        self.range_probe(query, radius, max_bucket, out);
    }

    /// Records in the bucket of table `t` where `code` is filed.
    fn bucket_len_of(&self, code: &[u64; W], t: usize) -> usize {
        self.bucket(t, substring(code, t)).len()
    }

    /// Verifies one candidate found in table `t` and reports it unless an earlier table
    /// (whose substring is also within that table's radius) has reported it already. With a
    /// bucket cap, an earlier table only counts if its bucket for the code was read.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn verify(
        &self,
        code: &[u64; W],
        slot: u32,
        query: &[u64; W],
        radius: u32,
        t: usize,
        max_bucket: usize,
        out: &mut Vec<(u64, u32)>,
    ) {
        let mut x = [0u64; W];
        let mut d = 0;
        for i in 0..W {
            x[i] = code[i] ^ query[i];
            d += x[i].count_ones();
        }
        if d > radius {
            return;
        }
        let earlier = (0..t).any(|t2| {
            Self::sub_radius(radius, t2).is_some_and(|s2| (substring(&x, t2) as u32).count_ones() <= s2)
                && (max_bucket == usize::MAX || self.bucket_len_of(code, t2) <= max_bucket)
        });
        if !earlier {
            out.push((self.ids[slot as usize], d));
        }
    }

    /// The multi-index probe path (requires non-empty tables).
    fn range_probe(&self, query: &[u64; W], radius: u32, max_bucket: usize, out: &mut Vec<(u64, u32)>) {
        let mut candidates: Vec<u32> = Vec::new();
        if !Self::INLINE {
            // A probe reads a bucket's header in the table, then its records on the heap: two
            // dependent cache misses. The tables probed at substring radius 0 (every table
            // for local descriptors) are known up front, so both reads are started for all of
            // them before any is needed, and their latencies overlap.
            let single =
                |t: usize| (Self::sub_radius(radius, t) == Some(0)).then(|| self.bucket(t, substring(query, t)));
            (0..Self::TABLES).filter_map(single).for_each(prefetch);
            (0..Self::TABLES)
                .filter_map(single)
                .filter_map(|b| b.0.first())
                .for_each(prefetch);
        }
        for t in 0..Self::TABLES {
            let Some(s) = Self::sub_radius(radius, t) else {
                continue;
            };
            let q = substring(query, t);
            let table = &self.tables[t * BUCKETS..(t + 1) * BUCKETS];
            if Self::INLINE {
                for_each_mask(s, |mask| {
                    let key = q ^ mask;
                    if table[key].len() > max_bucket {
                        return;
                    }
                    for rec in table[key].records(Self::STRIDE).chunks_exact(Self::STRIDE) {
                        self.verify(
                            &self.code_of(rec, t, key),
                            rec_slot(rec),
                            query,
                            radius,
                            t,
                            max_bucket,
                            out,
                        );
                    }
                });
                continue;
            }
            // Gather the table's candidates first: verifying them means random reads into the
            // code arena, and a flat list lets those reads be prefetched well ahead, so that
            // their memory latencies overlap instead of adding up.
            candidates.clear();
            for_each_mask(s, |mask| {
                let bucket = &table[q ^ mask];
                if bucket.len() <= max_bucket {
                    candidates.extend(bucket.records(Self::STRIDE).chunks_exact(Self::STRIDE).map(rec_slot));
                }
            });
            for (i, &slot) in candidates.iter().enumerate() {
                if let Some(&ahead) = candidates.get(i + PREFETCH_AHEAD) {
                    prefetch(&self.codes[ahead as usize]);
                }
                self.verify(&self.codes[slot as usize], slot, query, radius, t, max_bucket, out);
            }
        }
    }

    /// Brute-force scan with the same contract as [`range`](Self::range).
    pub fn range_linear(&self, query: &[u64; W], radius: u32, out: &mut Vec<(u64, u32)>) {
        if Self::INLINE {
            // Table 0 holds every live entry once.
            for (key, b) in self.tables.iter().take(BUCKETS).enumerate() {
                for rec in b.records(Self::STRIDE).chunks_exact(Self::STRIDE) {
                    let d = hamming(&self.code_of(rec, 0, key), query);
                    if d <= radius {
                        out.push((self.ids[rec_slot(rec) as usize], d));
                    }
                }
            }
            return;
        }
        for (slot, (code, &id)) in self.codes.iter().zip(&self.ids).enumerate() {
            let d = hamming(code, query);
            if d <= radius && self.is_live(slot) {
                out.push((id, d));
            }
        }
    }

    /// Writes the index for a snapshot (see [`crate::snapshot`]): the arena as it is (free
    /// slots included, so slot numbers stay valid), then per table the record count of every
    /// bucket and the records back to back. Loading is then a copy per bucket, with none of
    /// the hashing and growth of inserting.
    pub(crate) fn write_snapshot<O: std::io::Write>(&self, e: &mut Encoder<O>) -> std::io::Result<()> {
        e.u32(W as u32)?;
        e.u64(self.len as u64)?;
        e.u64(self.ids.len() as u64)?;
        e.words(&self.ids, u64::to_le_bytes)?;
        if !Self::INLINE {
            for c in &self.codes {
                e.words(c, u64::to_le_bytes)?;
            }
        }
        e.u64(self.live.len() as u64)?;
        e.words(&self.live, u64::to_le_bytes)?;
        e.u64(self.free.len() as u64)?;
        e.words(&self.free, u32::to_le_bytes)?;
        e.u8(u8::from(!self.tables.is_empty()))?;
        for table in self.tables.chunks(BUCKETS) {
            for b in table {
                e.u32(b.len() as u32)?;
            }
            for b in table {
                e.words(b.records(Self::STRIDE), u16::to_le_bytes)?;
            }
        }
        Ok(())
    }

    /// Reads what [`write_snapshot`](Self::write_snapshot) wrote. Checks every count against
    /// the bytes left and the arena's invariants, and every record's slot against the arena,
    /// so that no input can make a later query or update index out of bounds.
    pub(crate) fn read_snapshot<I: std::io::Read>(d: &mut Decoder<I>) -> Result<Self, SnapshotError> {
        let bad = |what: &str| SnapshotError::Invalid(format!("index of {W}-word codes: {what}"));
        if d.u32()? != W as u32 {
            return Err(bad("code width differs"));
        }
        let len = usize::try_from(d.u64()?).map_err(|_| bad("length too large"))?;
        let slot_bytes = 8 + if Self::INLINE { 0 } else { 8 * W as u64 };
        let slots = d.count(slot_bytes)?;
        if slots >= u32::MAX as usize {
            return Err(bad("too many slots"));
        }
        let ids = d.array(slots, 8, le_u64)?;
        let mut codes = Vec::new();
        if !Self::INLINE {
            codes.reserve_exact(slots);
            d.records(slots, 8 * W, |b| {
                let mut c = [0u64; W];
                for (w, x) in c.iter_mut().zip(b.chunks_exact(8)) {
                    *w = le_u64(x);
                }
                codes.push(c);
            })?;
        }
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
            tables: Vec::new(),
            bucket_words: 0,
        };
        match d.u8()? {
            0 if slots == 0 => return Ok(ix),
            1 => {}
            _ => return Err(bad("table flag")),
        }
        ix.tables.reserve_exact(Self::TABLES * BUCKETS);
        // Buckets are read in groups of about this many words.
        const GROUP_WORDS: usize = 1 << 20;
        for _ in 0..Self::TABLES {
            let counts = d.array(BUCKETS, 4, |b| le_u32(b) as usize)?;
            if counts.iter().sum::<usize>() != len {
                return Err(bad("a table's record count is not the index length"));
            }
            if !d.fits(len as u64, 2 * Self::STRIDE as u64) {
                return Err(bad("records truncated"));
            }
            let mut k = 0;
            while k < BUCKETS {
                let (start, mut words) = (k, 0);
                while k < BUCKETS && (k == start || words + counts[k] * Self::STRIDE <= GROUP_WORDS) {
                    words += counts[k] * Self::STRIDE;
                    k += 1;
                }
                let mut bytes = d.take(2 * words)?;
                for &n in &counts[start..k] {
                    if n == 0 {
                        ix.tables.push(Bucket::default());
                        continue;
                    }
                    let (recs, rest) = bytes.split_at(2 * n * Self::STRIDE);
                    bytes = rest;
                    let mut v = Vec::with_capacity(2 + n * Self::STRIDE);
                    v.extend_from_slice(&[n as u16, (n >> 16) as u16]);
                    v.extend(recs.chunks_exact(2).map(le_u16));
                    if v[2..].chunks_exact(Self::STRIDE).any(|r| rec_slot(r) as usize >= slots) {
                        return Err(bad("a record's slot is out of range"));
                    }
                    ix.bucket_words += v.len();
                    ix.tables.push(Bucket(v.into_boxed_slice()));
                }
            }
        }
        Ok(ix)
    }

    /// Approximate heap bytes held, for metrics.
    pub fn heap_bytes(&self) -> usize {
        self.codes.capacity() * size_of::<[u64; W]>()
            + self.ids.capacity() * size_of::<u64>()
            + self.live.capacity() * size_of::<u64>()
            + self.free.capacity() * size_of::<u32>()
            + self.tables.capacity() * size_of::<Bucket>()
            + self.bucket_words * size_of::<u16>()
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
        if r / HammingIndex::<W>::TABLES as u32 >= 3 {
            return;
        }
        // Capped: what brute force finds through some table whose bucket is small enough.
        for cap in [0, 1, 2, 5] {
            let bucket_len = |t: usize, code: &[u64; W]| {
                model
                    .iter()
                    .filter(|(c, _)| substring(c, t) == substring(code, t))
                    .count()
            };
            let mut want: Vec<(u64, u32)> = model
                .iter()
                .filter(|(code, _)| {
                    hamming(code, q) <= r
                        && (0..HammingIndex::<W>::TABLES).any(|t| {
                            let within = HammingIndex::<W>::sub_radius(r, t)
                                .is_some_and(|s| (substring(code, t) ^ substring(q, t)).count_ones() <= s);
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
            if self.tables.is_empty() || radius / Self::TABLES as u32 >= 3 {
                // Probing is exact for any radius but slow in debug tests.
                return self.range_linear(query, radius, out);
            }
            self.range_probe(query, radius, usize::MAX, out);
        }

        fn check_invariants(&self) {
            let mut total = 0;
            for (i, b) in self.tables.iter().enumerate() {
                let t = i / BUCKETS;
                let key = i % BUCKETS;
                for rec in b.records(Self::STRIDE).chunks_exact(Self::STRIDE) {
                    let s = rec_slot(rec);
                    assert!(self.is_live(s as usize));
                    let code = self.code_of(rec, t, key);
                    assert_eq!(substring(&code, t), key);
                    // Every table holds the same code for the slot.
                    assert_eq!(self.find_slot(&code, self.ids[s as usize]), Some(s));
                }
                total += b.len();
            }
            assert_eq!(total, self.len * Self::TABLES);
            let words: usize = self.tables.iter().map(|b| b.heap_words()).sum();
            assert_eq!(words, self.bucket_words);
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

    fn run_ops<const W: usize>(ops: Vec<Op<W>>) {
        let mut ix = HammingIndex::<W>::new();
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
        fn prop_matches_brute_force_w1(ops in prop::collection::vec(op_strategy::<1>((0..=16).collect()), 1..200)) {
            run_ops(ops);
        }

        #[test]
        fn prop_matches_brute_force_w4(ops in prop::collection::vec(op_strategy::<4>(vec![0, 1, 4, 8, 12, 31]), 1..200)) {
            run_ops(ops);
        }
    }

    #[test]
    fn mask_enumeration_counts() {
        for s in 0..=16u32 {
            let mut n = 0u64;
            let mut seen = std::collections::HashSet::new();
            for_each_mask(s, |m| {
                assert!(m < BUCKETS);
                assert!((m as u32).count_ones() <= s);
                assert!(seen.insert(m));
                n += 1;
            });
            assert_eq!(n, CUM_BINOM[s as usize], "s={s}");
        }
        assert_eq!(CUM_BINOM[16], 65536);
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
                let s = r / (4 * W as u32);
                if W == 1 && n >= 20_000 && s <= 2 {
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
        let mut ix1 = HammingIndex::<1>::new();
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
        assert_eq!(ix.bucket_words, 0);
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
        assert_eq!(
            back.bucket_words,
            ix.tables
                .iter()
                .map(|b| 2 + b.len() * HammingIndex::<W>::STRIDE)
                .filter(|&w| w > 2)
                .sum::<usize>()
        );
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
        huge[12..20].copy_from_slice(&u64::MAX.to_le_bytes());
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
