#!/usr/bin/env bash
# Shows, on a throwaway PostgreSQL, why relist's change log takes its sequence from one counter
# row (docs/scale-out.md#the-change-log): with a plain sequence a reader polling `seq > last`
# sees seq 2 while seq 1 is still uncommitted and skips it for good; with the counter row the
# second writer waits for the first to commit, so seq order is commit order.
# Run as root (PostgreSQL runs as the `postgres` user: initdb refuses root). Loopback only.
set -euo pipefail
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [[ -z "$bin" || ! -x "$bin/initdb" ]]; then
  echo "skipped: PostgreSQL not installed (apt-get install -y postgresql)"
  exit 0
fi
port=${PGPROOF_PORT:-55432}
dir=$(mktemp -d /tmp/relist-pgproof.XXXXXX)
chown postgres "$dir"
as_pg() { runuser -u postgres -- "$@"; }
cleanup() {
  as_pg "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
as_pg "$bin/initdb" -D "$dir/data" -A trust -U postgres >/dev/null
as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
  -o "-p $port -k $dir -c listen_addresses=127.0.0.1" start >/dev/null
sql() { as_pg "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -qAt -v ON_ERROR_STOP=1 -c "$1"; }
seen() { sql "select coalesce(string_agg(seq::text, ',' order by seq), 'none') from $1"; }

sql "create table log_plain (seq bigserial primary key, v text);
     create table relist_seq (id int primary key, seq bigint not null);
     insert into relist_seq values (1, 0);
     create table log_counter (seq bigint primary key, v text);"

next="with s as (update relist_seq set seq = seq + 1 where id = 1 returning seq)"

# Writer 1 takes its number and stays open for 2 s; writer 2 commits meanwhile.
sql "begin; insert into log_plain (v) values ('w1'); select pg_sleep(2); commit;" >/dev/null &
sleep 0.5
sql "insert into log_plain (v) values ('w2');"
echo "plain sequence: a reader sees [$(seen log_plain)] while writer 1 is open"
wait
echo "plain sequence: [$(seen log_plain)] after writer 1 commits: a reader past 2 never sees 1"

sql "begin; $next insert into log_counter select seq, 'w1' from s; select pg_sleep(2); commit;" >/dev/null &
sleep 0.5
echo "counter row: a reader sees [$(seen log_counter)] while writer 1 is open"
start=$(date +%s%N)
sql "$next insert into log_counter select seq, 'w2' from s;"
waited=$(( ($(date +%s%N) - start) / 1000000 ))
wait
echo "counter row: writer 2 waited ${waited} ms for writer 1's commit; a reader sees [$(seen log_counter)]"
