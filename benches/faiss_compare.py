"""The same codes and lookups as `cargo bench --bench index`, through FAISS.

Reads the files `benches/index.rs` writes with RELIST_BENCH_DUMP=DIR and, for each dataset,
builds FAISS `IndexBinaryMultiHash` (16-bit hashes: nhash = bits / 16, as HMA configures it
for PDQ, nflip = radius // nhash, which makes it exact) and `IndexBinaryFlat`, runs every
lookup on one thread, checks that the results per lookup equal relist's, and prints the
times and the ratio relist / FAISS.

FAISS's binary range search keeps distances strictly under the radius, so it is given
radius + 1 for relist's "at or under radius".

Run through `benches/faiss_compare.sh`, which installs faiss-cpu and numpy from PyPI.
"""
import glob
import json
import os
import sys
import time

import faiss
import numpy as np


def rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def pct(xs, p):
    xs = sorted(xs)
    return xs[round((len(xs) - 1) * p)] if xs else 0.0


def lookups_us(index, queries, per, radius, limit=None):
    times, counts = [], []
    n = len(queries) // per
    if limit is not None:
        n = min(n, limit)
    for i in range(n):
        q = queries[i * per:(i + 1) * per]
        t = time.perf_counter()
        lims, _, _ = index.range_search(q, radius + 1)
        times.append((time.perf_counter() - t) * 1e6)
        counts.append(int(lims[-1]))
    return times, counts


def main(d):
    faiss.omp_set_num_threads(1)
    rows = []
    for meta_path in sorted(glob.glob(os.path.join(d, "*.json"))):
        name = os.path.basename(meta_path)[:-5]
        meta = json.load(open(meta_path))
        bits, n, radius, per = meta["bits"], meta["n"], meta["radius"], meta["per_lookup"]
        codes = np.fromfile(os.path.join(d, name + ".codes"), dtype=np.uint8).reshape(n, bits // 8)
        queries = np.fromfile(os.path.join(d, name + ".queries"), dtype=np.uint8).reshape(-1, bits // 8)
        nhash = bits // 16
        mh = faiss.IndexBinaryMultiHash(bits, nhash, 16)
        mh.nflip = radius // nhash
        rss0 = rss_mib()
        t = time.perf_counter()
        mh.add(codes)
        add_s = time.perf_counter() - t
        mh_bytes = (rss_mib() - rss0) * (1 << 20) / n
        # MultiHash enumerates flips slowly at large radii: time the first 100 lookups.
        mh_t, mh_counts = lookups_us(mh, queries, per, radius, limit=100)
        same = mh_counts == meta["counts"][: len(mh_counts)]
        relist_mean = sum(meta["relist_us"][: len(mh_t)]) / len(mh_t)
        flat = faiss.IndexBinaryFlat(bits)
        flat.add(codes)
        flat_t, flat_counts = lookups_us(flat, queries, per, radius, limit=20)
        same_flat = flat_counts == meta["counts"][: len(flat_counts)]
        mh_mean = sum(mh_t) / len(mh_t)
        flat_mean = sum(flat_t) / len(flat_t)
        print(
            f"{name:<28} relist p50 {meta['relist_p50_us']:9.1f} p99 {meta['relist_p99_us']:9.1f} us | "
            f"MultiHash p50 {pct(mh_t, 0.5):9.1f} p99 {pct(mh_t, 0.99):9.1f} us (add {add_s:.1f}s, ~{mh_bytes:.0f} B/code) | "
            f"Flat mean {flat_mean:9.1f} us | relist/MultiHash time {relist_mean / mh_mean:.3f}, "
            f"relist/Flat {meta['relist_mean_us'] / flat_mean:.4f} | results identical: "
            f"MultiHash {same}, Flat {same_flat}",
            flush=True,
        )
        rows.append(same and same_flat)
        del mh, flat
    if not all(rows):
        print("FAISS and relist disagree on some results", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1])
