#!/usr/bin/env bash
# `make bench` (S3 part): the same backup and restore through two local S3 servers and
# through two local directories, side by side, on this machine.
#
# The S3 servers are, by default, lifeboat-bench-s3mem (tests/bench/s3mem: an s3s 0.14.1
# service over an in-memory map, built in release mode once under target/bench-s3mem): one
# per region on 127.0.0.1 with SigV4 authentication. It hands GET bodies out of memory without
# copying, and touches the memory it stores PUTs in before it listens (--reserve-mb: fresh
# zero-filled pages were a third of its CPU, on the cores lifeboat shares), so the difference
# between the two runs is lifeboat's S3 path (SDK, signing, HTTP, concurrency), not the
# server. BENCH_S3_SERVER=fs uses s3s-fs 0.14.1 instead (stores files;
# streams them in 4 KiB reads and hashes every object it serves: it was the bottleneck).
# Targets (issue 13.4): through S3, backup at least 80% and restore at least 70% of the local
# run's throughput; peak RSS bounded by the concurrency (packs in flight), not by the data
# size: the corpus is run at two sizes and the S3 peak RSS must not grow with it. Each case
# ends with an RTO line: at the measured restore rate, how much data restores within 2 h.
#
# Knobs: BENCH_S3_MB="512 2048" (corpus sizes, MiB; incompressible + text mix)
#        BENCH_RUNS=1 (medians)  BENCH_S3_SERVER=mem|fs  BENCH_PERF=1 (perf record -g of each
#        lifeboat command into BENCH_DIR/perf-s3-*.data)
#        BENCH_DIR=target/bench  BENCH_LIFEBOAT=PATH (skip the release build)
# Output: a table on stdout and s3-<timestamp>.json under BENCH_DIR. Exit 1 if a target is
# missed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
SIZES=${BENCH_S3_MB:-512 2048}
RUNS=${BENCH_RUNS:-1}
SERVER=${BENCH_S3_SERVER:-mem}
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
if [[ $SERVER == fs ]]; then
    S3S=$BENCH/s3s-fs/bin/s3s-fs
    if [[ ! -x $S3S ]]; then
        log "installing the s3s-fs 0.14.1 server (release) under $BENCH/s3s-fs"
        cargo install --quiet --locked s3s-fs --version =0.14.1 --features binary --root "$BENCH/s3s-fs"
    fi
else
    log "building the in-memory S3 server (tests/bench/s3mem, release)"
    CARGO_TARGET_DIR=$ROOT/target/bench-s3mem cargo build --quiet --release \
        --manifest-path "$ROOT/tests/bench/s3mem/Cargo.toml"
    S3S=$ROOT/target/bench-s3mem/release/lifeboat-bench-s3mem
fi
command -v /usr/bin/time >/dev/null || { echo "bench: GNU time (/usr/bin/time) is needed" >&2; exit 1; }

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_server root-dir MiB: sets PORT. Not called in $(...): the server's pid must reach
# PIDS in this shell, or nothing stops the server (each one holds its reserved memory).
start_server() {
    local dir=$1 mb=$2 port
    port=$(free_port)
    mkdir -p "$dir/bench"
    if [[ $SERVER == fs ]]; then
        "$S3S" --host 127.0.0.1 --port "$port" --access-key "$AK" --secret-key "$SK" "$dir" >/dev/null 2>&1 &
    else
        # Room for one region's copy of the corpus (at most its size plus pack overhead),
        # touched before the server listens: see tests/bench/s3mem/src/main.rs.
        "$S3S" --port "$port" --access-key "$AK" --secret-key "$SK" --bucket bench \
            --reserve-mb $((mb + mb / 8 + 64)) >/dev/null 2>&1 &
    fi
    PIDS+=($!)
    for _ in $(seq 1 600); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && { PORT=$port; return; }
        sleep 0.05
    done
    echo "bench: the S3 server did not start within 30 s" >&2
    exit 1
}

# timed NAME RUN CMD... : runs CMD under GNU time, appends "NAME seconds maxrss_kb cpu_s load1"
# to $TIMES.
timed() {
    local name=$1 run=$2; shift 2
    local prof=() load1
    load1=$(cut -d' ' -f1 /proc/loadavg)
    if [[ ${BENCH_PERF:-0} == 1 ]]; then
        prof=(perf record -q -g -o "$BENCH/perf-s3-$name-$run.data" --)
    fi
    /usr/bin/time -f "%e %M %U %S" -o "$WORK/time" "${prof[@]}" "$@" >/dev/null 2>"$WORK/stderr" || {
        cat "$WORK/stderr" >&2; echo "bench: $name failed" >&2; exit 1; }
    local e m u s
    read -r e m u s <"$WORK/time"
    echo "$name $e $m $(awk -v u="$u" -v s="$s" 'BEGIN {print u + s}') $load1" >> "$TIMES"
    printf '   %-22s %7.2f s  rss %5d MB  cpu %6.2f s  (load %s)\n' "$name" "$e" $((m / 1024)) \
        "$(awk -v u="$u" -v s="$s" 'BEGIN {print u + s}')" "$load1" >&2
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

run_case() { # kind(local|s3) MiB run
    local kind=$1 mb=$2 run=$3 case=$WORK/$1-$2
    rm -rf "$case"; mkdir -p "$case"
    "$LB" keys generate --dir "$case/keys" >/dev/null
    "$LB" config example --dir "$case" > "$case/lifeboat.toml"
    sed -i "s|path = \"$case/data\"|path = \"$WORK/corpus-$mb\"|" "$case/lifeboat.toml"
    if [[ $kind == s3 ]]; then
        local w e
        start_server "$case/s3-west" "$mb"; w=$PORT
        start_server "$case/s3-east" "$mb"; e=$PORT
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
    timed "$kind-$mb-backup" "$run" "$LB" backup app-data
    sync
    timed "$kind-$mb-restore" "$run" "$LB" restore app-data --from us-west-2 --to "$case/restore"
    diff -r -q "$WORK/corpus-$mb" "$case/restore" >/dev/null || {
        echo "bench: the $kind restore of $mb MiB differs from the corpus" >&2; exit 1; }
    rm -rf "$case/restore" "$case/s3-west" "$case/s3-east" "$case/us-west-2" "$case/us-east-2"
}

rm -rf "$WORK"; mkdir -p "$WORK"
TIMES=$WORK/times
: > "$TIMES"
for mb in $SIZES; do
    log "corpus: $mb MiB"
    make_corpus "$WORK/corpus-$mb" "$mb"
    for run in $(seq 1 "$RUNS"); do
        for kind in local s3; do
            log "$kind: backup + restore of $mb MiB, run $run/$RUNS"
            run_case "$kind" "$mb" "$run"
            for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
            PIDS=()
        done
    done
    rm -rf "$WORK/corpus-$mb"
done

python3 - "$TIMES" "$OUT" "$SIZES" "$SERVER" <<'PY'
import json, statistics, sys
times, out, sizes, server = sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3].split()], sys.argv[4]
runs = {}
for line in open(times):
    name, secs, rss, cpu, load = line.split()
    runs.setdefault(name, []).append({"seconds": float(secs), "max_rss_mb": int(rss) / 1024,
                                      "cpu_seconds": float(cpu), "load1": float(load)})
med = lambda xs: statistics.median(xs)
r = {n: {"seconds": med([x["seconds"] for x in v]), "max_rss_mb": med([x["max_rss_mb"] for x in v]),
         "cpu_seconds": med([x["cpu_seconds"] for x in v]), "runs": v} for n, v in runs.items()}
TARGET = {"backup": 0.80, "restore": 0.70}
ok = True
print(f"server: {server}; medians of {len(next(iter(runs.values())))} run(s)")
print(f"| MiB | op | local s | S3 s | S3/local throughput | target | local RSS MB | S3 RSS MB | CPU s local / S3 |")
print(f"|---:|---|---:|---:|---:|---|---:|---:|---:|")
for mb in sizes:
    for op in ("backup", "restore"):
        l, s = r[f"local-{mb}-{op}"], r[f"s3-{mb}-{op}"]
        ratio = l["seconds"] / s["seconds"] if s["seconds"] else 0
        met = ratio >= TARGET[op]
        ok &= met
        print(f"| {mb} | {op} | {l['seconds']:.2f} | {s['seconds']:.2f} | {ratio:.0%} | ≥ {TARGET[op]:.0%} {'met' if met else 'MISSED'} "
              f"| {l['max_rss_mb']:.0f} | {s['max_rss_mb']:.0f} | {l['cpu_seconds']:.1f} / {s['cpu_seconds']:.1f} |")
    for kind, label in (("s3", "S3"), ("local", "local directories")):
        rate = mb * 2**20 / r[f"{kind}-{mb}-restore"]["seconds"]
        print(f"RTO ({mb} MiB case): at the measured restore rate ({rate / 1e6:.0f} MB/s), "
              f"{rate * 7200 / 1e9:.0f} GB restore within the 2 h RTO from {label}.")
small, large = sizes[0], sizes[-1]
for op in ("backup", "restore"):
    a, b = r[f"s3-{small}-{op}"]["max_rss_mb"], r[f"s3-{large}-{op}"]["max_rss_mb"]
    bounded = b <= a * 1.25 + 32
    ok &= bounded
    print(f"s3 {op} peak RSS {a:.0f} MB at {small} MiB, {b:.0f} MB at {large} MiB: {'bounded' if bounded else 'GROWS WITH DATA'}")
json.dump({"server": server, "results": r, "targets_met": ok}, open(out, "w"), indent=2)
print(f"targets {'met' if ok else 'MISSED'} (through S3: backup >= 80%, restore >= 70% of local; RSS independent of size); {out}")
sys.exit(0 if ok else 1)
PY
