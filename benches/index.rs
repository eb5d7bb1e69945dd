//! The exact Hamming index at marketplace scale, beside a linear scan of the same data in the
//! same run.
//!
//! For each size (1M by default; `RELIST_BENCH_SIZES=1000000,10000000` for the full run) and
//! each distribution (uniformly random codes, and clustered ones: groups of ten near-identical
//! codes, as real re-uploads produce):
//!
//! - 64-bit codes (pHash, title simhash), range queries at radii 4, 8 and 12;
//! - 256-bit PDQ codes at radius 31, each lookup querying 8 codes (the dihedral variants of a
//!   photo: one near copy of a stored code, seven others).
//!
//! Half the queries are near copies of stored codes (a few bits flipped), half are random.
//! Prints build time, heap bytes per stored code (ids included), p50/p99 per lookup, lookups/s
//! on one core, and the same lookups by linear scan (on a subset), with the speed-up; every
//! scanned lookup's results must equal the index's.
//!
//! With `RELIST_BENCH_DUMP=DIR` it also writes the codes, queries and result counts for
//! `benches/faiss_compare.py`, which runs the same lookups through FAISS.
//!
//! Run: `cargo bench --bench index` (or `benches/faiss_compare.sh` for everything);
//! `RELIST_BENCH_KINDS=pdq` (or `b64`) for one kind.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[path = "support/mod.rs"]
mod support;

use relist_core::index::HammingIndex;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*: fast, deterministic, good enough for test codes.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|s| s.trim().replace('_', "").parse().ok())
        .collect()
}

fn flip<const W: usize>(code: &mut [u64; W], bits: u32, rng: &mut Rng) {
    for _ in 0..bits {
        let b = rng.below(64 * W as u64) as usize;
        code[b / 64] ^= 1 << (b % 64);
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Dist {
    Random,
    Clustered,
}

impl Dist {
    fn name(self) -> &'static str {
        match self {
            Dist::Random => "random",
            Dist::Clustered => "clustered",
        }
    }
}

/// `n` codes: random, or groups of ten within 0-8 bits of a random centre.
fn codes<const W: usize>(n: usize, dist: Dist, seed: u64) -> Vec<[u64; W]> {
    let mut rng = Rng(seed | 1);
    let mut out = Vec::with_capacity(n);
    let mut centre = [0u64; W];
    for i in 0..n {
        if dist == Dist::Random || i % 10 == 0 {
            centre = std::array::from_fn(|_| rng.next());
        }
        let mut c = centre;
        if dist == Dist::Clustered {
            let bits = rng.below(9) as u32;
            flip(&mut c, bits, &mut rng);
        }
        out.push(c);
    }
    out
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

struct Timing {
    /// Per lookup, in order.
    each_us: Vec<f64>,
    p50_us: f64,
    p99_us: f64,
    mean_us: f64,
}

fn timing(each_us: Vec<f64>) -> Timing {
    let mut us = each_us.clone();
    us.sort_by(f64::total_cmp);
    Timing {
        each_us,
        p50_us: percentile(&us, 0.5),
        p99_us: percentile(&us, 0.99),
        mean_us: us.iter().sum::<f64>() / us.len().max(1) as f64,
    }
}

/// Lookups: each is `per_lookup` query codes. The first code of half the lookups is a near
/// copy (2-`near_bits` flipped bits) of a stored code; everything else is random.
fn lookups<const W: usize>(
    stored: &[[u64; W]],
    count: usize,
    per_lookup: usize,
    near_bits: u32,
    seed: u64,
) -> Vec<Vec<[u64; W]>> {
    let mut rng = Rng(seed | 1);
    (0..count)
        .map(|i| {
            (0..per_lookup)
                .map(|j| {
                    if i % 2 == 0 && j == 0 {
                        let mut c = stored[rng.below(stored.len() as u64) as usize];
                        let bits = 2 + rng.below(u64::from(near_bits.max(2)) - 1) as u32;
                        flip(&mut c, bits, &mut rng);
                        c
                    } else {
                        std::array::from_fn(|_| rng.next())
                    }
                })
                .collect()
        })
        .collect()
}

fn sorted(mut v: Vec<(u64, u32)>) -> Vec<(u64, u32)> {
    v.sort_unstable();
    v
}

/// Times every lookup through the index, and the first `linear` of them by linear scan,
/// checking that both return the same results. Returns (index timing, scan timing, results
/// per lookup).
fn run_lookups<const W: usize>(
    ix: &HammingIndex<W>,
    stored: &[[u64; W]],
    qs: &[Vec<[u64; W]>],
    radius: u32,
    linear: usize,
) -> (Timing, Timing, Vec<usize>) {
    let mut idx_us = Vec::with_capacity(qs.len());
    let mut counts = Vec::with_capacity(qs.len());
    let mut results = Vec::with_capacity(qs.len());
    let mut out = Vec::new();
    for q in qs {
        out.clear();
        let t = Instant::now();
        for code in q {
            ix.range(code, radius, &mut out);
        }
        idx_us.push(t.elapsed().as_secs_f64() * 1e6);
        counts.push(out.len());
        results.push(out.clone());
    }
    let mut lin_us = Vec::new();
    for (q, expect) in qs.iter().zip(&results).take(linear) {
        out.clear();
        let t = Instant::now();
        for code in q {
            linear_scan(stored, code, radius, &mut out);
        }
        lin_us.push(t.elapsed().as_secs_f64() * 1e6);
        assert_eq!(
            sorted(out.clone()),
            sorted(expect.clone()),
            "index and linear scan disagree"
        );
    }
    (timing(idx_us), timing(lin_us), counts)
}

/// The baseline: one pass over a flat array of the same codes (id = position), as a
/// scan-everything matcher would keep them.
fn linear_scan<const W: usize>(stored: &[[u64; W]], q: &[u64; W], radius: u32, out: &mut Vec<(u64, u32)>) {
    for (i, c) in stored.iter().enumerate() {
        let mut d = 0;
        for w in 0..W {
            d += (c[w] ^ q[w]).count_ones();
        }
        if d <= radius {
            out.push((i as u64, d));
        }
    }
}

fn as_bytes<const W: usize>(codes: &[[u64; W]]) -> Vec<u8> {
    codes
        .iter()
        .flat_map(|c| c.iter().flat_map(|w| w.to_le_bytes()))
        .collect()
}

/// Writes `name.codes` / `name.queries` (raw little-endian words: FAISS sees the same bits)
/// and `name.json` (radius, queries per lookup, relist's timings and result counts).
#[allow(clippy::too_many_arguments)]
fn dump<const W: usize>(
    dir: &Path,
    name: &str,
    stored: &[[u64; W]],
    qs: &[Vec<[u64; W]>],
    radius: u32,
    t: &Timing,
    lin: &Timing,
    counts: &[usize],
) {
    std::fs::create_dir_all(dir).expect("dump dir");
    std::fs::write(dir.join(format!("{name}.codes")), as_bytes(stored)).expect("write codes");
    let flat: Vec<[u64; W]> = qs.iter().flatten().copied().collect();
    std::fs::write(dir.join(format!("{name}.queries")), as_bytes(&flat)).expect("write queries");
    let meta = serde_json::json!({
        "bits": 64 * W, "n": stored.len(), "radius": radius,
        "per_lookup": qs.first().map_or(1, |q| q.len()), "lookups": qs.len(),
        "relist_p50_us": t.p50_us, "relist_p99_us": t.p99_us, "relist_mean_us": t.mean_us,
        "linear_mean_us": lin.mean_us, "counts": counts, "relist_us": t.each_us,
    });
    std::fs::write(dir.join(format!("{name}.json")), meta.to_string()).expect("write meta");
}

fn report(label: &str, t: &Timing, lin: &Timing, counts: &[usize]) {
    let hits = counts.iter().sum::<usize>() as f64 / counts.len().max(1) as f64;
    println!(
        "  {label:<26} p50 {:>8.1} us  p99 {:>8.1} us  {:>8.0} lookups/s   linear {:>9.1} us  x{:<6.0} ({hits:.1} results/lookup)",
        t.p50_us,
        t.p99_us,
        1e6 / t.mean_us.max(1e-9),
        lin.mean_us,
        lin.mean_us / t.mean_us.max(1e-9),
    );
}

/// Builds the index by inserting one code at a time, as registrations do. Returns the index,
/// the seconds taken, the RSS growth (MiB) and the slowest single insert (ms): the layout is
/// rebuilt as the index grows, and that insert pays for it while the index is locked.
fn build<const W: usize>(codes: &[[u64; W]]) -> (HammingIndex<W>, f64, f64, f64) {
    let rss0 = support::rss_mib("self").0;
    let t = Instant::now();
    let mut ix = HammingIndex::<W>::new();
    let mut slowest = 0f64;
    for (i, c) in codes.iter().enumerate() {
        let t = Instant::now();
        ix.insert(*c, i as u64);
        slowest = slowest.max(t.elapsed().as_secs_f64());
    }
    let secs = t.elapsed().as_secs_f64();
    (ix, secs, support::rss_mib("self").0 - rss0, slowest * 1e3)
}

fn main() {
    let sizes = env_list("RELIST_BENCH_SIZES", "1000000");
    let n_lookups = env_list("RELIST_BENCH_QUERIES", "1000")[0];
    let dump_dir: Option<PathBuf> = std::env::var_os("RELIST_BENCH_DUMP").map(PathBuf::from);
    // RELIST_BENCH_KINDS=b64 or =pdq runs one kind only.
    let kinds = std::env::var("RELIST_BENCH_KINDS").unwrap_or_else(|_| "b64,pdq".into());
    // Linear scans are slow at 10M: time a subset of the lookups.
    let linear_of = |n: usize| if n > 2_000_000 { 20 } else { 100 };
    println!("index benchmark: one core, exact results; linear = the same lookups by scan");
    for &n in &sizes {
        for dist in [Dist::Random, Dist::Clustered] {
            println!("\n{n} codes, {}:", dist.name());
            if kinds.contains("b64") {
                let stored = codes::<1>(n, dist, 7 + n as u64);
                let (ix, secs, rss, slowest) = build(&stored);
                let add = {
                    // Latency of one more insert into the full index: matchable at once.
                    let mut ix = ix;
                    let t = Instant::now();
                    ix.insert([0x0123_4567_89ab_cdef], u64::MAX);
                    let us = t.elapsed().as_secs_f64() * 1e6;
                    ix.remove(&[0x0123_4567_89ab_cdef], u64::MAX);
                    (ix, us)
                };
                let (ix, add_us) = add;
                println!(
                    "  64-bit: built in {secs:.1}s, {:.1} heap bytes per code (ids included), RSS +{rss:.0} MiB; one more insert {add_us:.1} us, slowest insert (a rebuild) {slowest:.0} ms",
                    ix.heap_bytes() as f64 / n as f64
                );
                for radius in [4u32, 8, 12] {
                    let qs = lookups(&stored, n_lookups, 1, radius, 11 + u64::from(radius));
                    let (t, lin, counts) = run_lookups(&ix, &stored, &qs, radius, linear_of(n));
                    report(&format!("64-bit r={radius}"), &t, &lin, &counts);
                    if let Some(d) = &dump_dir {
                        let name = format!("b64-r{radius}-{}-{n}", dist.name());
                        dump(d, &name, &stored, &qs, radius, &t, &lin, &counts);
                    }
                }
            }
            if kinds.contains("pdq") {
                let stored = codes::<4>(n, dist, 13 + n as u64);
                let (ix, secs, rss, slowest) = build(&stored);
                println!(
                    "  PDQ:    built in {secs:.1}s, {:.1} heap bytes per code (ids included), RSS +{rss:.0} MiB, slowest insert (a rebuild) {slowest:.0} ms",
                    ix.heap_bytes() as f64 / n as f64
                );
                let qs = lookups(&stored, n_lookups, 8, 31, 17);
                let (t, lin, counts) = run_lookups(&ix, &stored, &qs, 31, linear_of(n) / 4);
                report("PDQ r=31, 8 variants", &t, &lin, &counts);
                if let Some(d) = &dump_dir {
                    let name = format!("pdq-r31-{}-{n}", dist.name());
                    dump(d, &name, &stored, &qs, 31, &t, &lin, &counts);
                }
            }
        }
    }
    std::io::stdout().flush().ok();
}
