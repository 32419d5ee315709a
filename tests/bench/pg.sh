#!/usr/bin/env bash
# The PostgreSQL case of `make bench`: lifeboat's postgres source beside `pg_dump | zstd` and
# `pg_dump | restic backup --stdin`, in the same run, on a throwaway cluster.
#
#   day 1   `pgbench -i -s SCALE` (≈ 100 MB of dump per 10 of scale), then each tool backs up
#   day 2   after `pgbench -t TX` transactions, each tool backs up again: time, and how much
#           each repository grew (the dump is always whole; growth is what deduplication
#           could not avoid); lifeboat's raw bytes in new chunks say how much of the dump
#           deduplicated before compression
#   restore each tool restores day 2 into a fresh database (pg_restore / psql), timed
#
# Knobs: BENCH_PG_SCALE=30  BENCH_PG_TX=2000  BENCH_DIR=target/bench
#        BENCH_LIFEBOAT=PATH (this binary instead of building target/release/lifeboat)
# Needs: root (the cluster runs as the postgres user), PostgreSQL server + client, pgbench,
# zstd, restic, GNU time. Output: a table on stdout, pg-<timestamp>.json under BENCH_DIR.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
SCALE=${BENCH_PG_SCALE:-30}
TX=${BENCH_PG_TX:-2000}
BENCH=${BENCH_DIR:-$ROOT/target/bench}
mkdir -p "$BENCH"
BENCH=$(cd "$BENCH" && pwd)
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$BENCH/pg-$STAMP.json
log() { printf '== %s\n' "$*" >&2; }
die() { printf 'bench/pg: %s\n' "$*" >&2; exit 1; }

if [[ -n ${BENCH_LIFEBOAT:-} ]]; then
    LB=$(realpath "$BENCH_LIFEBOAT")
else
    log "release build (cargo build --release --bin lifeboat)"
    cargo build --release --bin lifeboat
    LB=$ROOT/target/release/lifeboat
fi
[[ -x $LB ]] || die "no lifeboat binary at $LB"
[[ $(id -u) == 0 ]] || die "run as root (the throwaway cluster runs as the postgres user)"
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[[ -x $PGBIN/initdb ]] || die "PostgreSQL is not installed: run \`make deps\`"
for t in pgbench zstd restic psql pg_dump pg_restore /usr/bin/time; do
    command -v "$t" >/dev/null || die "$t is missing (make deps; apt-get install zstd restic time)"
done

WORK=$(mktemp -d "$BENCH/pg-work-XXXXXX")
chown postgres:postgres "$WORK"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cleanup() {
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
log "throwaway cluster on port $PORT"
runuser -u postgres -- "$PGBIN/initdb" -A trust -U postgres --no-sync -E UTF8 -D "$WORK/data" >/dev/null
runuser -u postgres -- "$PGBIN/pg_ctl" -w -D "$WORK/data" -l "$WORK/log" \
    -o "-p $PORT -k $WORK -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
BASE=postgres://postgres@127.0.0.1:$PORT
DB=$BASE/bench
psql -X -q -d "$BASE/postgres" -c "CREATE DATABASE bench"
log "pgbench -i -s $SCALE"
pgbench -q -i -s "$SCALE" "$DB" >/dev/null 2>&1

# GNU time: wall seconds and peak RSS (KiB) of one command, appended to $WORK/times.
timed() { # name command...
    local name=$1; shift
    /usr/bin/time -f "$name %e %M" -a -o "$WORK/times" "$@"
}
size() { du -sb "$1" | cut -f1; }
field() { awk -v n="$1" '$1 == n { print $'"$2"' }' "$WORK/times" | tail -1; }

# lifeboat: keys, two local regions, one postgres plan.
export LIFEBOAT_CONFIG=$WORK/lb/lifeboat.toml
mkdir -p "$WORK/lb"
"$LB" keys generate --dir "$WORK/lb/keys" >/dev/null
"$LB" config example --dir "$WORK/lb" > "$LIFEBOAT_CONFIG"
printf '\n[[plans]]\nname = "pg"\nsource = { kind = "postgres", url = "%s" }\n' "$DB" >> "$LIFEBOAT_CONFIG"
"$LB" init >/dev/null
REGION=$WORK/lb/us-west-2

export RESTIC_PASSWORD=lifeboat-bench RESTIC_REPOSITORY=$WORK/restic
restic init -q >/dev/null

dump_bytes() { pg_dump -Fc -Z0 -d "$DB" | wc -c; }

for day in 1 2; do
    if [[ $day == 2 ]]; then
        log "pgbench -t $TX (day 2 changes)"
        pgbench -n -t "$TX" "$DB" >/dev/null 2>&1
    fi
    DUMP=$(dump_bytes)
    echo "dump$day $DUMP" >> "$WORK/sizes"
    log "day $day: dump $DUMP bytes"
    before_lb=$(size "$REGION"); before_restic=$(size "$WORK/restic")
    timed "lifeboat_backup$day" "$LB" backup pg --json > "$WORK/lb$day.json"
    echo "lifeboat_new$day $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["stats"]["new_bytes"])' "$WORK/lb$day.json")" >> "$WORK/sizes"
    timed "zstd_backup$day" sh -c "pg_dump -Fc -Z0 -d '$DB' | zstd -q -3 -T0 -f -o '$WORK/day$day.dump.zst'"
    timed "restic_backup$day" sh -c "pg_dump -Fc -Z0 -d '$DB' | restic backup -q --stdin --stdin-filename bench.dump >/dev/null"
    echo "lifeboat_growth$day $(( $(size "$REGION") - before_lb ))" >> "$WORK/sizes"
    echo "restic_growth$day $(( $(size "$WORK/restic") - before_restic ))" >> "$WORK/sizes"
    echo "zstd_growth$day $(size "$WORK/day$day.dump.zst")" >> "$WORK/sizes"
done

fresh() { psql -X -q -d "$BASE/postgres" -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1"; }
log "restores of day 2"
fresh r_lb
timed lifeboat_restore "$LB" restore pg --to "$BASE/r_lb" >/dev/null
fresh r_zstd
timed zstd_restore sh -c "zstd -dc '$WORK/day2.dump.zst' | pg_restore --no-owner --exit-on-error --single-transaction -d '$BASE/r_zstd'"
fresh r_restic
timed restic_restore sh -c "restic dump -q latest bench.dump | pg_restore --no-owner --exit-on-error --single-transaction -d '$BASE/r_restic'"
for db in r_lb r_zstd r_restic; do
    n=$(psql -X -A -t -d "$BASE/$db" -c "select count(*) from pgbench_accounts")
    [[ $n == $(( SCALE * 100000 )) ]] || die "$db: $n rows in pgbench_accounts"
done

python3 - "$WORK/times" "$WORK/sizes" "$OUT" "$SCALE" "$TX" "$LB" <<'EOF'
import json, sys
times, sizes, out, scale, tx, lb = sys.argv[1:]
t = {}
for line in open(times):
    p = line.split()
    if len(p) == 3 and not p[0].startswith("Command"):
        t[p[0]] = (float(p[1]), int(p[2]))
s = {k: int(v) for k, v in (l.split() for l in open(sizes))}
mb = lambda b: b / 1e6
rows = []
for tool in ["lifeboat", "zstd", "restic"]:
    r = {"tool": tool}
    for day in (1, 2):
        secs, rss = t[f"{tool}_backup{day}"]
        r[f"backup{day}_s"] = secs
        r[f"backup{day}_MBps"] = mb(s[f"dump{day}"]) / secs if secs else None
        r[f"backup{day}_rss_MB"] = rss / 1024
        r[f"growth{day}_MB"] = mb(s[f"{tool}_growth{day}"])
    secs, rss = t[f"{tool}_restore"]
    r["restore_s"] = secs
    r["restore_MBps"] = mb(s["dump2"]) / secs if secs else None
    r["restore_rss_MB"] = rss / 1024
    rows.append(r)
print(f"\nPostgreSQL: pgbench -i -s {scale}, day 2 after {tx} transactions; dump (pg_dump -Fc -Z0) "
      f"day 1 {mb(s['dump1']):.0f} MB, day 2 {mb(s['dump2']):.0f} MB; lifeboat = {lb}")
print(f"{'tool':<9} {'day1 s':>7} {'MB/s':>6} {'+MB':>7} {'day2 s':>7} {'MB/s':>6} {'+MB day2':>9} {'restore s':>10} {'MB/s':>6} {'RSS MB':>7}")
for r in rows:
    print(f"{r['tool']:<9} {r['backup1_s']:>7.1f} {r['backup1_MBps']:>6.0f} {r['growth1_MB']:>7.1f} "
          f"{r['backup2_s']:>7.1f} {r['backup2_MBps']:>6.0f} {r['growth2_MB']:>9.1f} "
          f"{r['restore_s']:>10.1f} {r['restore_MBps']:>6.0f} {max(r['backup1_rss_MB'], r['restore_rss_MB']):>7.0f}")
print(f"lifeboat raw bytes in new chunks: day 1 {mb(s['lifeboat_new1']):.0f} MB, day 2 {mb(s['lifeboat_new2']):.0f} MB "
      f"({100 * s['lifeboat_new2'] / s['dump2']:.0f}% of the day-2 dump was not deduplicated)")
print("zstd: a whole compressed dump per day (its '+MB' is that file); backup and restore times"
      " include pg_dump / pg_restore for every tool.")
json.dump({"scale": int(scale), "transactions": int(tx), "sizes": s, "results": rows}, open(out, "w"), indent=2)
print(f"results: {out}")
EOF
