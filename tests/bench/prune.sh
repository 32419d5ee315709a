#!/usr/bin/env bash
# `make bench` (prune case): prune time and peak memory after 30 simulated days.
#
# Backs up the generated tree corpus (corpus.py) into two local regions once per "day",
# changing ~2% of the files between days, for BENCH_DAYS days (default 30); then forgets
# down to the 7 newest snapshots and runs prune twice (mark, then delete with --grace 0s).
# The "days" pass in seconds, so the plan has no `schedule`: with one, forget's runaway
# guard would rightly refuse 30 snapshots made within a minute.
# Reports, for each prune: wall time and peak RSS (GNU time), bytes freed, objects deleted,
# and the repository size before and after.
#
# Knobs: BENCH_SIZE_MB=1000 BENCH_DAYS=30 BENCH_SEED=20261 BENCH_DIR=target/bench
#        BENCH_LIFEBOAT=PATH (use this binary instead of building target/release/lifeboat)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/tests/bench
SIZE_MB=${BENCH_SIZE_MB:-1000}
DAYS=${BENCH_DAYS:-30}
SEED=${BENCH_SEED:-20261}
BENCH=${BENCH_DIR:-$ROOT/target/bench}
mkdir -p "$BENCH"
BENCH=$(cd "$BENCH" && pwd)
WORK=$BENCH/prune-work
log() { printf '== %s\n' "$*" >&2; }

if [[ -n ${BENCH_LIFEBOAT:-} ]]; then
    LB=$(realpath "$BENCH_LIFEBOAT")
else
    log "release build (cargo build --release --bin lifeboat)"
    (cd "$ROOT" && cargo build --release --bin lifeboat)
    LB=$ROOT/target/release/lifeboat
fi
[[ -x /usr/bin/time ]] || { echo "bench: GNU time (/usr/bin/time) is required" >&2; exit 1; }

TREE=$BENCH/corpus-$SIZE_MB-s$SEED
[[ -d $TREE ]] || python3 "$HERE/corpus.py" tree "$TREE" --size-mb "$SIZE_MB" --seed "$SEED"

rm -rf "$WORK"
mkdir -p "$WORK"
cp -a "$TREE" "$WORK/data"
"$LB" keys generate --dir "$WORK/keys" >/dev/null
"$LB" config example --dir "$WORK" |
    sed -e 's|rpo = "24h"|rpo = "1s"|' \
        -e 's|^retention = .*|retention = { keep_last = 7 }|' \
        -e 's|^schedule = .*||' >"$WORK/lifeboat.toml"
export LIFEBOAT_CONFIG=$WORK/lifeboat.toml
"$LB" init >/dev/null

for day in $(seq 1 "$DAYS"); do
    "$LB" backup app-data >/dev/null
    # ~2% of the files change each day (new content, same names).
    python3 - "$WORK/data" "$SEED" "$day" <<'PY'
import os, random, sys
root, seed, day = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed * 1000 + day)
files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
for path in rng.sample(files, max(1, len(files) // 50)):
    size = os.path.getsize(path)
    with open(path, "wb") as f:
        f.write(rng.randbytes(max(size, 1)))
PY
    sleep 1  # distinct snapshot times
done
size() { du -sb "$WORK/us-west-2" | cut -f1; }
before=$(size)
"$LB" forget --json >"$WORK/forget.json"
for phase in mark delete; do
    /usr/bin/time -f '%e %M' -o "$WORK/time-$phase" \
        "$LB" prune --grace 0s --json >"$WORK/prune-$phase.json"
done
after=$(size)
python3 - "$WORK" "$DAYS" "$SIZE_MB" "$before" "$after" <<'PY'
import json, sys
work, days, size_mb, before, after = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
forgot = sum(len(p["forgotten"]) for p in json.load(open(f"{work}/forget.json"))["plans"])
print(f"prune after {days} simulated days of a {size_mb} MiB tree ({forgot} snapshots forgotten)")
print(f"{'phase':8} {'wall s':>8} {'peak RSS MiB':>13} {'freed MiB':>10} {'objects deleted':>16}")
for phase in ("mark", "delete"):
    wall, rss_kb = open(f"{work}/time-{phase}").read().split()
    r = json.load(open(f"{work}/prune-{phase}.json"))
    print(f"{phase:8} {float(wall):8.2f} {int(rss_kb)/1024:13.1f} {r['bytes_freed']/2**20:10.1f} {r['objects_deleted']:16}")
print(f"region size: {before/2**20:.1f} MiB before, {after/2**20:.1f} MiB after")
PY
