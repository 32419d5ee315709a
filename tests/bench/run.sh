#!/usr/bin/env bash
# `make bench`: lifeboat against restic on the same data, on this machine, side by side.
#
# For each corpus: backup day 1 (fresh repositories), day 2 after ~1% of the files changed,
# repository size, and a full restore into an empty directory; wall time and peak RSS (GNU
# time) of each command. Corpora (built once, cached under target/bench/):
#   tree   a generated application-data tree, BENCH_SIZE_MB MiB (default 1000), see corpus.py
#   linux  the Linux source tree from Debian's linux-source package, when installed
#          (BENCH_LINUX=1 installs it)
#   dump   one BENCH_DUMP_MB MiB (default 500) CSV file like a database dump: backup + restore
#   scale  BENCH_SCALE_FILES small files (default 300000; 100-3000 B, one chunk each, 1000 per
#          directory): the metadata scale case. BENCH_SCALE_BIG=1 adds 1,200,000 files (long:
#          generating and backing up 1.2M files takes most of an hour here)
#
# Every case also times an "index load": a restore of a path the snapshot does not have, which
# pays the listing, the index and manifest load and the root tree, and writes nothing.
#
# Knobs (environment):
#   BENCH_SIZE_MB=1000  BENCH_DUMP_MB=500  BENCH_RUNS=1 (medians; use 3 for numbers to quote)
#   BENCH_CORPORA="tree linux dump scale"  BENCH_LINUX=0|1  BENCH_SEED=20261
#   BENCH_SCALE_FILES=300000  BENCH_SCALE_BIG=0|1  BENCH_SCALE_BIG_RUNS=BENCH_RUNS (runs of the
#                 1.2M case only: one run of it takes ~15 min here, so 1 keeps a full bench short)
#   BENCH_COLD_RESTORE=1 (sync + drop the page cache before each restore, when writable)
#   BENCH_DIR=target/bench  BENCH_KEEP=0 (1 keeps the repositories of the last case)
#   BENCH_LIFEBOAT=PATH (benchmark this binary instead of building target/release/lifeboat)
#   BENCH_PERF=1 (record `perf record -g` profiles of lifeboat's commands into BENCH_DIR;
#                 perf's overhead is then inside lifeboat's times: profile, don't compare)
#
# Backups always start with the corpus in the page cache (it is read once before each
# timed backup), so they measure the tools, not the disk. Restores start equally cold for
# both tools (page cache dropped, when allowed) and write into an empty directory.
# Output: a table per corpus on stdout; results-<timestamp>.json (medians and every run)
# under BENCH_DIR.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/tests/bench
cd "$ROOT"

SIZE_MB=${BENCH_SIZE_MB:-1000}
DUMP_MB=${BENCH_DUMP_MB:-500}
RUNS=${BENCH_RUNS:-1}
CORPORA=${BENCH_CORPORA:-tree linux dump scale}
SCALE_FILES=${BENCH_SCALE_FILES:-300000}
if [[ ${BENCH_SCALE_BIG:-0} == 1 ]]; then SCALE_FILES="$SCALE_FILES 1200000"; fi
SEED=${BENCH_SEED:-20261}
COLD=${BENCH_COLD_RESTORE:-1}
KEEP=${BENCH_KEEP:-0}
BENCH=${BENCH_DIR:-$ROOT/target/bench}
mkdir -p "$BENCH"
BENCH=$(cd "$BENCH" && pwd)
WORK=$BENCH/work
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RAW=$BENCH/raw-$STAMP.jsonl
META=$BENCH/meta-$STAMP.json
LB=$ROOT/target/release/lifeboat
STARTED=$(date +%s)

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------
# Tools

if [[ -n ${BENCH_LIFEBOAT:-} ]]; then
    LB=$(realpath "$BENCH_LIFEBOAT")
    LB_SOURCE="binary $LB (BENCH_LIFEBOAT)"
    log "using $LB (BENCH_LIFEBOAT), not building"
else
    log "release build (cargo build --release --bin lifeboat)"
    cargo build --release --bin lifeboat
    LB_SOURCE="working tree at $(git -C "$ROOT" describe --always --dirty)"
fi
[[ -x $LB ]] || die "no lifeboat binary at $LB"

APT_UPDATED=0
apt_install() {
    [[ $(id -u) == 0 ]] || die "need root to apt-get install $*; install it and re-run"
    if [[ $APT_UPDATED == 0 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
command -v restic >/dev/null || { log "installing restic (Debian)"; apt_install restic; }
[[ -x /usr/bin/time ]] || { log "installing GNU time"; apt_install time; }
command -v python3 >/dev/null || die "python3 is required (corpus generator and report)"

# Restic reads the password from the environment; its cache lives with the repository.
export RESTIC_PASSWORD=lifeboat-bench
export RESTIC_CACHE_DIR=$WORK/restic-cache

can_drop_caches() { [[ $COLD == 1 && -w /proc/sys/vm/drop_caches ]]; }
if [[ $COLD == 1 ]] && ! can_drop_caches; then
    log "cannot write /proc/sys/vm/drop_caches: restores run with whatever is cached (note it)"
fi

# ---------------------------------------------------------------------------------------
# Corpora

TREE=$BENCH/corpus-$SIZE_MB-s$SEED
DUMP_DIR=$BENCH/dump-$DUMP_MB-s$SEED
LINUX=$BENCH/linux

prepare_tree() {
    [[ -d $TREE ]] && return
    log "generating the $SIZE_MB MiB tree corpus into $TREE (once)"
    python3 "$HERE/corpus.py" tree "$TREE" --size-mb "$SIZE_MB" --seed "$SEED"
}

scale_dir() { echo "$BENCH/small-$1-s$SEED"; }

prepare_scale() { # FILES
    local dir
    dir=$(scale_dir "$1")
    [[ -d $dir ]] && return
    log "generating $1 small files into $dir (once)"
    python3 "$HERE/corpus.py" small "$dir" --files "$1" --seed "$SEED"
}

prepare_dump() {
    [[ -f $DUMP_DIR/orders.sql ]] && return
    log "generating the $DUMP_MB MiB dump corpus into $DUMP_DIR (once)"
    python3 "$HERE/corpus.py" dump "$DUMP_DIR/orders.sql" --size-mb "$DUMP_MB" --seed "$SEED"
}

# Returns 1 (and says why) when the Linux tree is not available.
prepare_linux() {
    [[ -d $LINUX ]] && return 0
    local tarball
    tarball=$(ls /usr/src/linux-source-*.tar.xz 2>/dev/null | sort -V | tail -n 1 || true)
    if [[ -z $tarball && ${BENCH_LINUX:-0} == 1 ]]; then
        log "installing linux-source (BENCH_LINUX=1)"
        apt_install linux-source
        tarball=$(ls /usr/src/linux-source-*.tar.xz 2>/dev/null | sort -V | tail -n 1 || true)
    fi
    if [[ -z $tarball ]]; then
        log "linux corpus skipped: Debian's linux-source is not installed" \
            "(apt-get install linux-source, or run with BENCH_LINUX=1)"
        return 1
    fi
    log "extracting $tarball into $LINUX (once)"
    rm -rf "$LINUX.partial" && mkdir -p "$LINUX.partial"
    tar -xJf "$tarball" -C "$LINUX.partial" --strip-components=1
    mv "$LINUX.partial" "$LINUX"
}

# ---------------------------------------------------------------------------------------
# Measurement

warm() { find "$1" -type f -print0 | xargs -0 -r cat >/dev/null; }

settle_cold() {
    sync
    if can_drop_caches; then echo 3 >/proc/sys/vm/drop_caches; fi
}

# A DR restore runs on a host that never saw the repository: neither tool's local metadata
# cache (lifeboat's <cache_dir>/<repo>/meta, restic's RESTIC_CACHE_DIR) survives into the
# index-load and restore figures. The files cache (backups only) stays.
bare_host() { # LIFEBOAT_DIR
    rm -rf "$1"/cache/*/meta "$RESTIC_CACHE_DIR"
}

# measure CORPUS TOOL OP RUN CMD...: run CMD under GNU time, append one JSON line to $RAW.
measure() {
    local corpus=$1 tool=$2 op=$3 run=$4
    shift 4
    local tf=$WORK/time.txt out=$WORK/logs/$corpus-$tool-$op-$run
    local load1
    load1=$(cut -d' ' -f1 /proc/loadavg)
    sync
    local prof=()
    if [[ ${BENCH_PERF:-0} == 1 && $tool == lifeboat ]]; then
        prof=(perf record -q -g -o "$BENCH/perf-$corpus-$op-$run.data" --)
    fi
    if ! /usr/bin/time -f '%e %U %S %M' -o "$tf" "${prof[@]}" "$@" >"$out.out" 2>"$out.err"; then
        tail -n 20 "$out.err" >&2
        die "$tool $op failed on $corpus (logs: $out.err)"
    fi
    local e u s m
    read -r e u s m <"$tf"
    printf '{"corpus":"%s","tool":"%s","op":"%s","run":%d,"seconds":%s,"user":%s,"sys":%s,"rss_kb":%s,"load1":%s}\n' \
        "$corpus" "$tool" "$op" "$run" "$e" "$u" "$s" "$m" "$load1" >>"$RAW"
    printf '   %-9s %-12s %8.2f s   cpu %6.2f s   rss %5d MB   (load %s)\n' \
        "$tool" "$op" "$e" "$(awk -v u="$u" -v s="$s" 'BEGIN {print u + s}')" "$((m / 1024))" "$load1" >&2
}

record_size() { # CORPUS TOOL RUN BYTES
    printf '{"corpus":"%s","tool":"%s","op":"repo_bytes","run":%d,"bytes":%s}\n' "$1" "$2" "$3" "$4" >>"$RAW"
}

du_bytes() { du -sb "$@" | awk '{s += $1} END {print s}'; }

# "files bytes" of the regular files under DIR.
tree_sum() { find "$1" -type f -printf '%s\n' | awk '{n++; s += $1} END {printf "%d %d\n", n, s}'; }

# A restore counts only if it is complete and exact: compare contents (untimed).
check_restore() { # WHAT SOURCE RESTORED
    diff -r -q --no-dereference "$2" "$3" >"$WORK/diff.txt" 2>&1 ||
        die "$1: restored tree differs from the source: $(head -n 5 "$WORK/diff.txt")"
}

lb_setup() { # DIR SOURCE
    local d=$1 src=$2
    rm -rf "$d" && mkdir -p "$d"
    "$LB" keys generate --dir "$d/keys" >/dev/null
    "$LB" config example --dir "$d" >"$d/lifeboat.toml"
    # The example's plan backs up DIR/data with excludes; point it at the corpus, no excludes.
    sed -i "s|^source = .*|source = { kind = \"dir\", path = \"$src\" }|" "$d/lifeboat.toml"
    grep -q "path = \"$src\" }" "$d/lifeboat.toml" || die "could not point the plan at $src"
    LIFEBOAT_CONFIG=$d/lifeboat.toml "$LB" init >/dev/null
}

restic_setup() { # REPO
    rm -rf "$1" "$RESTIC_CACHE_DIR"
    restic -r "$1" init -q >/dev/null
}

STASH=$WORK/stash
MUTATED=""
undo_mutation() {
    if [[ -n $MUTATED && -d $STASH ]]; then
        python3 "$HERE/corpus.py" unmutate "$MUTATED" --stash "$STASH"
    fi
    MUTATED=""
}
cleanup() {
    local rc=$?
    undo_mutation || true
    exit "$rc"
}
trap cleanup EXIT

# bench_case NAME SOURCE DAY2(0|1) RUN: one run of both tools on one corpus.
bench_case() {
    local name=$1 src=$2 day2=$3 run=$4
    local lbd=$WORK/lifeboat repo=$WORK/restic
    export LIFEBOAT_CONFIG=$lbd/lifeboat.toml
    lb_setup "$lbd" "$src"
    restic_setup "$repo"
    # Alternate which tool goes first, so neither always inherits the other's leftovers.
    local order=(lifeboat restic)
    if ((run % 2 == 0)); then order=(restic lifeboat); fi

    local tool
    for tool in "${order[@]}"; do
        warm "$src"
        case $tool in
        lifeboat) measure "$name" lifeboat backup_day1 "$run" "$LB" backup app-data --json ;;
        restic) measure "$name" restic backup_day1 "$run" restic -r "$repo" backup -q "$src" ;;
        esac
    done
    if [[ $day2 == 1 ]]; then
        MUTATED=$src
        python3 "$HERE/corpus.py" mutate "$src" --stash "$STASH"
        for tool in "${order[@]}"; do
            warm "$src"
            case $tool in
            lifeboat) measure "$name" lifeboat backup_day2 "$run" "$LB" backup app-data --json ;;
            restic) measure "$name" restic backup_day2 "$run" restic -r "$repo" backup -q "$src" ;;
            esac
        done
    fi
    local lb_bytes
    lb_bytes=$(du_bytes "$lbd/us-west-2" "$lbd/us-east-2")
    record_size "$name" lifeboat "$run" "$lb_bytes"
    record_size "$name" restic "$run" "$(du_bytes "$repo")"

    # Index load: a restore of a path that is not in the snapshot (nothing is written).
    for tool in "${order[@]}"; do
        bare_host "$lbd"
        case $tool in
        lifeboat)
            measure "$name" lifeboat index_load "$run" bash -c \
                '"$@" 2>&1 | grep -q "no such path in the snapshot"' _ \
                "$LB" restore app-data --from us-west-2 --include .bench-no-such-path --to "$WORK/restore-none"
            ;;
        restic)
            measure "$name" restic index_load "$run" restic -r "$repo" restore latest -q \
                --include /.bench-no-such-path --target "$WORK/restore-none"
            ;;
        esac
        rm -rf "$WORK/restore-none"
    done

    for tool in "${order[@]}"; do
        rm -rf "$WORK/restore"
        bare_host "$lbd"
        settle_cold
        case $tool in
        lifeboat)
            # Not with LIFEBOAT_RESTORE_MEMTRACE=1: its peak resets also reset GNU time's.
            measure "$name" lifeboat restore "$run" "$LB" restore app-data --from us-west-2 --to "$WORK/restore"
            check_restore "lifeboat restore" "$src" "$WORK/restore"
            ;;
        restic)
            measure "$name" restic restore "$run" restic -r "$repo" restore latest -q --target "$WORK/restore"
            # restic restores under the source's absolute path.
            check_restore "restic restore" "$src" "$WORK/restore$src"
            ;;
        esac
    done
    rm -rf "$WORK/restore"
    undo_mutation
    if [[ $KEEP != 1 ]]; then rm -rf "$lbd" "$repo" "$RESTIC_CACHE_DIR"; fi
}

corpus_meta() { # NAME SOURCE KIND
    local files bytes
    read -r files bytes < <(tree_sum "$2")
    printf '{"name":"%s","path":"%s","kind":"%s","files":%d,"bytes":%d}' "$1" "$2" "$3" "$files" "$bytes"
}

# ---------------------------------------------------------------------------------------
# Run

rm -rf "$WORK" && mkdir -p "$WORK/logs"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
if awk -v l="${LOAD_BEFORE%% *}" -v n="$(nproc)" 'BEGIN {exit !(l > n / 2)}'; then
    log "the machine is busy (load $LOAD_BEFORE on $(nproc) cores): times will be noisy; ratios less so"
fi
corpora_json=()
for c in $CORPORA; do
    case $c in
    tree)
        prepare_tree
        corpora_json+=("$(corpus_meta "tree-$SIZE_MB" "$TREE" tree)")
        ;;
    linux)
        if prepare_linux; then corpora_json+=("$(corpus_meta linux "$LINUX" tree)"); fi
        ;;
    dump)
        prepare_dump
        corpora_json+=("$(corpus_meta "dump-$DUMP_MB" "$DUMP_DIR" file)")
        ;;
    scale)
        for n in $SCALE_FILES; do
            prepare_scale "$n"
            corpora_json+=("$(corpus_meta "small-$n" "$(scale_dir "$n")" scale)")
        done
        ;;
    *) die "unknown corpus $c in BENCH_CORPORA (tree, linux, dump, scale)" ;;
    esac
done

for run in $(seq 1 "$RUNS"); do
    for c in $CORPORA; do
        case $c in
        tree)
            log "tree-$SIZE_MB, run $run/$RUNS"
            bench_case "tree-$SIZE_MB" "$TREE" 1 "$run"
            ;;
        linux)
            if [[ -d $LINUX ]]; then
                log "linux, run $run/$RUNS"
                bench_case linux "$LINUX" 1 "$run"
            fi
            ;;
        dump)
            log "dump-$DUMP_MB, run $run/$RUNS"
            bench_case "dump-$DUMP_MB" "$DUMP_DIR" 0 "$run"
            ;;
        scale)
            for n in $SCALE_FILES; do
                if ((n == 1200000 && run > ${BENCH_SCALE_BIG_RUNS:-$RUNS})); then continue; fi
                log "small-$n, run $run/$RUNS"
                bench_case "small-$n" "$(scale_dir "$n")" 1 "$run"
            done
            ;;
        esac
    done
done

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
cold=false
can_drop_caches && cold=true
corpora_list=$(IFS=,; echo "${corpora_json[*]}")
cat >"$META" <<EOF
{"stamp":"$STAMP","host":"$(hostname)","cores":$(nproc),
 "mem_gib":$(awk '/MemTotal/ {printf "%.1f", $2/1048576}' /proc/meminfo),
 "kernel":"$(uname -r)","load_before":"$LOAD_BEFORE","load_after":"$LOAD_AFTER",
 "runs":$RUNS,"cold_restore":$cold,"seconds_total":$(($(date +%s) - STARTED)),
 "lifeboat":"$("$LB" --version)","lifeboat_source":"$LB_SOURCE",
 "restic":"$(restic version | head -n 1)",
 "corpora":[$corpora_list]}
EOF
python3 "$HERE/report.py" "$META" "$RAW" "$BENCH/results-$STAMP.json"
rm -f "$RAW" "$META"
log "done in $(($(date +%s) - STARTED)) s; results in $BENCH/results-$STAMP.json"
