#!/usr/bin/env bash
# relist's index beside FAISS (IndexBinaryMultiHash as HMA configures it, and IndexBinaryFlat)
# on the same codes and lookups, in one run. Installs faiss-cpu and numpy from PyPI.
#   benches/faiss_compare.sh                 # 1M codes
#   RELIST_BENCH_SIZES=1000000,10000000 benches/faiss_compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q faiss-cpu numpy
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
RELIST_BENCH_DUMP="$dir" cargo bench --bench index
echo
echo "FAISS on the same data (one thread):"
python3 benches/faiss_compare.py "$dir"
