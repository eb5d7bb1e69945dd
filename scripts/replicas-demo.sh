#!/usr/bin/env bash
# Three relist replicas on one PostgreSQL, on this machine, for a look at how a shared bank
# behaves (docs/scale-out.md). Starts a throwaway PostgreSQL cluster in a temp dir (initdb as
# the `postgres` user when run as root), three `relist serve --store postgres://...` on
# 127.0.0.1:50061-50063 with a data dir each, registers a takedown on the first and checks it
# on the other two; then leaves everything running until Enter or Ctrl-C, and cleans up.
#
#   scripts/replicas-demo.sh            # needs PostgreSQL (Debian: apt-get install postgresql)
#   RELIST_BIN=target/debug/relist scripts/replicas-demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ]; then
  echo "PostgreSQL is not installed (Debian: apt-get install postgresql)" >&2
  exit 1
fi
RELIST=${RELIST_BIN:-target/release/relist}
if [ ! -x "$RELIST" ]; then
  echo "==> building $RELIST"
  cargo build --release --bin relist
fi

WORK=$(mktemp -d /tmp/relist-demo.XXXXXX)
PORT=${RELIST_DEMO_PG_PORT:-55432}
BASE=${RELIST_DEMO_PORT_BASE:-50060}   # replicas on BASE+1, BASE+2, BASE+3
AS_PG=""
[ "$(id -u)" = 0 ] && AS_PG="runuser -u postgres --"
as_pg() { $AS_PG "$@"; }
[ "$(id -u)" = 0 ] && chown postgres:postgres "$WORK"

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "==> PostgreSQL on 127.0.0.1:$PORT (cluster in $WORK/pg)"
as_pg "$PG_BIN/initdb" -D "$WORK/pg" -U postgres -A trust -E UTF8 >/dev/null
as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w \
  -o "-p $PORT -c listen_addresses=127.0.0.1 -k $WORK" start >/dev/null
as_pg "$PG_BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -qc "CREATE DATABASE relist"
STORE="postgres://postgres@127.0.0.1:$PORT/relist"

for i in 1 2 3; do
  mkdir -p "$WORK/replica$i"
  "$RELIST" serve --store "$STORE" --data-dir "$WORK/replica$i" --listen "127.0.0.1:$((BASE + i))" \
    2>"$WORK/replica$i.log" &
  PIDS+=($!)
done
for i in 1 2 3; do
  for _ in $(seq 1 100); do
    grep -q "relist serving" "$WORK/replica$i.log" && break
    sleep 0.1
  done
  grep -q "relist serving" "$WORK/replica$i.log" || { cat "$WORK/replica$i.log" >&2; exit 1; }
done
echo "==> replicas A, B, C on 127.0.0.1:$((BASE + 1)), :$((BASE + 2)), :$((BASE + 3)) (logs in $WORK)"

PDQ=e8e8d0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6339e23c33b8c
echo "==> register a takedown on A"
"$RELIST" takedown add --addr "127.0.0.1:$((BASE + 1))" --marketplace shopee --listing-id 123 \
  --seller-id s9 --title "BAJU BEKAS IMPORT ORI" --reason "illegal used clothing import" --pdq "$PDQ"
for r in B:$((BASE + 2)) C:$((BASE + 3)); do
  echo "==> check a re-upload on ${r%%:*}"
  "$RELIST" check --addr "127.0.0.1:${r##*:}" --dry-run --marketplace tokopedia --listing-id 777 \
    --title "b4ju bekas imp0rt original READY" \
    --pdq e8e8d0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6339e23c33b8f || true
done

cat <<EOF

The replicas keep running: try \`$RELIST check --addr 127.0.0.1:$((BASE + 3)) ...\`, stop PostgreSQL
(${AS_PG:+$AS_PG }$PG_BIN/pg_ctl -D $WORK/pg stop) and watch checks say the bank may be stale and writes
fail UNAVAILABLE, start it again and watch them recover.
Press Enter (or Ctrl-C) to stop everything and delete $WORK.
EOF
read -r _ || true
