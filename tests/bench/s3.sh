#!/usr/bin/env bash
# `make bench` (S3 part): the same backup and restore through two local S3 servers and
# through two local directories, side by side, on this machine.
#
# The S3 servers are s3s-fs 0.14.1 (release build, installed once under target/bench/s3s-fs),
# one per region on 127.0.0.1 with SigV4 authentication, each storing into its own directory:
# so the only difference between the two runs is lifeboat's S3 path (SDK, signing, HTTP) and
# the server. Targets (issue 3): backup and restore throughput through S3 at least 70% of the
# local run's, and peak RSS bounded by the upload concurrency (packs in flight), not by the
# data size: the corpus is run at two sizes and the S3 peak RSS must not grow with it.
#
# Knobs: BENCH_S3_MB="512 2048" (corpus sizes, MiB; incompressible + text mix)
#        BENCH_DIR=target/bench  BENCH_LIFEBOAT=PATH (skip the release build)
# Output: a table on stdout and s3-<timestamp>.json under BENCH_DIR. Exit 1 if a target is
# missed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
SIZES=${BENCH_S3_MB:-512 2048}
BENCH=${BENCH_DIR:-$ROOT/target/bench}
mkdir -p "$BENCH"
BENCH=$(cd "$BENCH" && pwd)
WORK=$BENCH/s3-work
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$BENCH/s3-$STAMP.json
AK=lifeboat-bench
SK=lifeboat-bench-secret-key-0123456789

log() { printf '== %s\n' "$*" >&2; }

if [[ -n ${BENCH_LIFEBOAT:-} ]]; then
    LB=$(realpath "$BENCH_LIFEBOAT")
else
    log "release build (cargo build --release --bin lifeboat)"
    cargo build --release --bin lifeboat
    LB=$ROOT/target/release/lifeboat
fi
S3S=$BENCH/s3s-fs/bin/s3s-fs
if [[ ! -x $S3S ]]; then
    log "installing the s3s-fs 0.14.1 server (release) under $BENCH/s3s-fs"
    cargo install --quiet --locked s3s-fs --version =0.14.1 --features binary --root "$BENCH/s3s-fs"
fi
command -v /usr/bin/time >/dev/null || { echo "bench: GNU time (/usr/bin/time) is needed" >&2; exit 1; }

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_server() { # root-dir -> prints port
    local dir=$1 port
    port=$(free_port)
    mkdir -p "$dir/bench"
    "$S3S" --host 127.0.0.1 --port "$port" --access-key "$AK" --secret-key "$SK" "$dir" >/dev/null 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && { echo "$port"; return; }
        sleep 0.05
    done
    echo "bench: s3s-fs did not start" >&2
    exit 1
}

# timed NAME CMD... : runs CMD under GNU time, appends "NAME seconds maxrss_kb" to $TIMES.
timed() {
    local name=$1; shift
    /usr/bin/time -f "%e %M" -o "$WORK/time" "$@" >/dev/null 2>"$WORK/stderr" || {
        cat "$WORK/stderr" >&2; echo "bench: $name failed" >&2; exit 1; }
    echo "$name $(cat "$WORK/time")" >> "$TIMES"
}

make_corpus() { # dir MiB: 3/4 incompressible, 1/4 text, in 8 MiB files
    local dir=$1 mb=$2 i
    mkdir -p "$dir"
    for ((i = 0; i < mb / 8; i++)); do
        if ((i % 4 == 3)); then
            # `yes` dies of SIGPIPE when head has enough: expected, not a failure.
            { yes "row $i, some text that compresses, $(date -u +%F)" || true; } | head -c $((8 << 20)) > "$dir/text-$i.csv"
        else
            head -c $((8 << 20)) /dev/urandom > "$dir/blob-$i.bin"
        fi
    done
}

run_case() { # kind(local|s3) MiB
    local kind=$1 mb=$2 case=$WORK/$1-$2
    rm -rf "$case"; mkdir -p "$case"
    "$LB" keys generate --dir "$case/keys" >/dev/null
    "$LB" config example --dir "$case" > "$case/lifeboat.toml"
    sed -i "s|path = \"$case/data\"|path = \"$WORK/corpus-$mb\"|" "$case/lifeboat.toml"
    if [[ $kind == s3 ]]; then
        local w e
        w=$(start_server "$case/s3-west"); e=$(start_server "$case/s3-east")
        python3 - "$case/lifeboat.toml" "$w" "$e" <<'PY'
import re, sys
path, west, east = sys.argv[1], sys.argv[2], sys.argv[3]
text = open(path).read()
start, end = text.index("[[regions]]"), text.index("[[plans]]")
regions = ""
for name, port in (("us-west-2", west), ("us-east-2", east)):
    regions += f'[[regions]]\nname = "{name}"\nkind = "s3"\nbucket = "bench"\nregion = "{name}"\nendpoint = "http://127.0.0.1:{port}"\n\n'
open(path, "w").write(text[:start] + regions + text[end:])
PY
    fi
    export LIFEBOAT_CONFIG=$case/lifeboat.toml AWS_ACCESS_KEY_ID=$AK AWS_SECRET_ACCESS_KEY=$SK \
        AWS_EC2_METADATA_DISABLED=true AWS_REGION=us-west-2
    "$LB" init >/dev/null
    cat "$WORK/corpus-$mb"/* > /dev/null   # page cache warm for both runs
    timed "$kind-$mb-backup" "$LB" backup app-data
    timed "$kind-$mb-restore" "$LB" restore app-data --to "$case/restore"
    rm -rf "$case/restore" "$case/s3-west" "$case/s3-east" "$case/us-west-2" "$case/us-east-2"
}

rm -rf "$WORK"; mkdir -p "$WORK"
TIMES=$WORK/times
: > "$TIMES"
for mb in $SIZES; do
    log "corpus: $mb MiB"
    make_corpus "$WORK/corpus-$mb" "$mb"
    for kind in local s3; do
        log "$kind: backup + restore of $mb MiB"
        run_case "$kind" "$mb"
    done
    rm -rf "$WORK/corpus-$mb"
done

python3 - "$TIMES" "$OUT" "$SIZES" <<'PY'
import json, sys
times, out, sizes = sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3].split()]
r = {}
for line in open(times):
    name, secs, rss = line.split()
    r[name] = {"seconds": float(secs), "max_rss_mb": int(rss) / 1024}
ok = True
print(f"{'MiB':>6} {'op':8} {'local s':>8} {'s3 s':>8} {'s3/local MB/s':>14} {'local RSS':>10} {'s3 RSS':>8}")
for mb in sizes:
    for op in ("backup", "restore"):
        l, s = r[f"local-{mb}-{op}"], r[f"s3-{mb}-{op}"]
        ratio = l["seconds"] / s["seconds"] if s["seconds"] else 0
        ok &= ratio >= 0.70
        print(f"{mb:>6} {op:8} {l['seconds']:>8.2f} {s['seconds']:>8.2f} {ratio:>13.0%} {l['max_rss_mb']:>8.0f}MB {s['max_rss_mb']:>6.0f}MB")
small, large = sizes[0], sizes[-1]
for op in ("backup", "restore"):
    a, b = r[f"s3-{small}-{op}"]["max_rss_mb"], r[f"s3-{large}-{op}"]["max_rss_mb"]
    bounded = b <= a * 1.25 + 32
    ok &= bounded
    print(f"s3 {op} peak RSS {a:.0f} MB at {small} MiB, {b:.0f} MB at {large} MiB: {'bounded' if bounded else 'GROWS WITH DATA'}")
json.dump({"results": r, "targets_met": ok}, open(out, "w"), indent=2)
print(f"targets {'met' if ok else 'MISSED'} (throughput through S3 >= 70% of local; RSS independent of size); {out}")
sys.exit(0 if ok else 1)
PY
