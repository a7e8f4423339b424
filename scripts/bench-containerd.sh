#!/usr/bin/env bash
# containerd with its built-in overlayfs snapshotter against containerd with strata-snapshotter
# (proxy plugin), in one run, each into a fresh private containerd (own root, state, sockets; CRI
# off), with the benchmark rootfs image (make-rootfs.sh):
#   - `ctr images import` (unpack included), and `ctr run --rm` of a trivial command;
#   - a pull with unpack through containerd's Go client (tests/containerd/pull: the unpacker CRI
#     uses, which names each layer's chain on Prepare) from Debian's docker-registry on
#     127.0.0.1: overlayfs; strata with an empty store; strata whose store holds the image's
#     layers already (`strata image import` into its root before the round, not timed), where
#     strata answers each Prepare `already exists` and containerd fetches no layer;
#   - Prepare+Mounts+Remove through containerd's client (tests/containerd/snapbench, CYCLES
#     cycles per round, default 200) over the pulled image's top chain.
# Median of RUNS, ratio strata/overlayfs.
#
# Usage: sudo scripts/bench-containerd.sh [BENCHDIR] [RUNS]   (default /var/tmp/strata-bench, 5)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" bench-containerd
need_root
find_cargo
BENCH=${1:-/var/tmp/strata-bench}
RUNS=${2:-5}
scripts/setup.sh
cargo build --release -p strata-cli -p strata-snapshotter --quiet
SNAP=$PWD/target/release/strata-snapshotter
S=$PWD/target/release/strata
CYCLES=${CYCLES:-200}
# go_build DIR NAME: tests/containerd/DIR built as target/go-bin/NAME, in GOPATH mode against
# Debian's containerd sources, offline (as cli/tests/it/containerd_ctr.rs builds it); its path.
go_build() {
    (cd "tests/containerd/$1" && GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= \
        GOCACHE="$REPO/target/go-cache" go build -o "$REPO/target/go-bin/$2" .) >&2
    echo "$REPO/target/go-bin/$2"
}
GO_PULL=$(go_build pull containerd-pull)
SNAPBENCH=$(go_build snapbench containerd-snapbench)
scripts/make-rootfs.sh "$BENCH" >/dev/null
W=$(mktemp -d /tmp/strata-bc.XXXXXX)   # short: unix socket paths are limited to 108 bytes
PIDS=()
REG_PID=
cleanup() {
    for p in "${PIDS[@]}" $REG_PID; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    umount -R "$W"/*/state/*/io.containerd.runtime.v2.task/* 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT
skopeo copy -q "oci:$BENCH/oci:rootfs" "oci-archive:$W/rootfs.tar:rootfs"
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
now() { date +%s.%N; }

# start DIR SNAPSHOTTER: a private containerd (and strata-snapshotter for "strata") under DIR;
# its socket is DIR/state/c.sock.
start() {
    local d=$1 sn=$2
    mkdir -p "$d"
    if [ "$sn" = strata ]; then
        "$SNAP" --root "$d/strata" --address "$d/s.sock" >"$d/snap.log" 2>&1 &
        PIDS+=($!)
        for _ in $(seq 100); do [ -S "$d/s.sock" ] && break; sleep 0.05; done
    fi
    private_containerd "$d/root" "$d/state" "$d/s.sock"
    PIDS+=("$CTRD_PID")
}
stop_all() {   # the round's daemons, not the registry
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}

declare -A IMPORT RUN
for sn in overlayfs strata; do
    : > "$W/$sn.import"; : > "$W/$sn.run"
done
for i in $(seq "$RUNS"); do
    for sn in overlayfs strata; do
        d=$W/$sn-$i
        start "$d" "$sn"
        c=(ctr -a "$d/state/c.sock" -n bench)
        sync
        t0=$(now)
        "${c[@]}" images import --snapshotter "$sn" --index-name bench/rootfs:1 "$W/rootfs.tar" >/dev/null
        sync
        t1=$(now)
        "${c[@]}" run --snapshotter "$sn" --rm bench/rootfs:1 warm /bin/true
        t2=$(now)
        "${c[@]}" run --snapshotter "$sn" --rm bench/rootfs:1 "run$i" /bin/true
        t3=$(now)
        echo "$t1 - $t0" | bc >> "$W/$sn.import"
        echo "$t3 - $t2" | bc >> "$W/$sn.run"
        stop_all
        rm -rf "$d"
    done
done
for sn in overlayfs strata; do
    IMPORT[$sn]=$(median < "$W/$sn.import")
    RUN[$sn]=$(median < "$W/$sn.run")
done
printf '%-48s %12s %12s %8s\n' "median of $RUNS (seconds)" overlayfs strata "s/o"
printf '%-48s %12.3f %12.3f %8.2f\n' "ctr images import (unpack included)" "${IMPORT[overlayfs]}" "${IMPORT[strata]}" \
    "$(echo "${IMPORT[strata]} / ${IMPORT[overlayfs]}" | bc -l)"
printf '%-48s %12.3f %12.3f %8.2f\n' "ctr run --rm /bin/true" "${RUN[overlayfs]}" "${RUN[strata]}" \
    "$(echo "${RUN[strata]} / ${RUN[overlayfs]}" | bc -l)"

# The pull through containerd's Go client, from a registry of our own, and the snapshot calls'
# latency over the image it pulled.
local_registry "$W/registry"   # REG_ADDR, REG_PID (lib.sh)
REF=$REG_ADDR/bench/rootfs:1
skopeo copy -q --dest-tls-verify=false "oci:$BENCH/oci:rootfs" "docker://$REF"
CASES=(overlayfs strata strata-held)
for c in "${CASES[@]}"; do : > "$W/$c.gopull"; : > "$W/$c.snap"; done
for i in $(seq "$RUNS"); do
    for c in "${CASES[@]}"; do
        sn=${c%-held}
        d=$W/$c-$i
        mkdir -p "$d"
        if [ "$c" = strata-held ]; then
            # The layers strata holds already: imported through the CLI, before the round.
            "$S" --root "$d/strata" image import "$BENCH/oci:rootfs" --name bench/rootfs:1 >/dev/null
        fi
        start "$d" "$sn"
        sync
        t0=$(now)
        "$GO_PULL" "$d/state/c.sock" bench "$sn" "$REF" >/dev/null
        sync
        t1=$(now)
        echo "$t1 - $t0" | bc >> "$W/$c.gopull"
        "$SNAPBENCH" "$d/state/c.sock" bench "$sn" "$REF" "$CYCLES" >> "$W/$c.snap"
        if [ "$c" = strata-held ] && [ "$(grep -c 'layer already held' "$d/snap.log")" = 0 ]; then
            say "strata-held round $i: strata reused no layer (see $d/snap.log)"
            exit 1
        fi
        stop_all
        rm -rf "$d"
    done
done
declare -A PULL
for c in "${CASES[@]}"; do PULL[$c]=$(median < "$W/$c.gopull"); done
# snap_median CASE FIELD: the median over the rounds of FIELD (microseconds) of snapbench's lines.
snap_median() { sed -n "s/.* $2=\([0-9.]*\).*/\1/p" "$W/$1.snap" | median; }
ratio() { echo "$1 / $2" | bc -l; }
echo
printf '%-48s %12s %12s %8s\n' "Go client pull, median of $RUNS (seconds)" overlayfs strata "s/o"
printf '%-48s %12.3f %12.3f %8.2f\n' "pull with unpack, empty store" "${PULL[overlayfs]}" "${PULL[strata]}" \
    "$(ratio "${PULL[strata]}" "${PULL[overlayfs]}")"
printf '%-48s %12.3f %12.3f %8.2f\n' "pull with unpack, layers strata holds" "${PULL[overlayfs]}" \
    "${PULL[strata-held]}" "$(ratio "${PULL[strata-held]}" "${PULL[overlayfs]}")"
echo
printf '%-48s %8s %8s %8s %8s %8s %6s\n' \
    "Prepare+Mounts+Remove, $CYCLES cycles x $RUNS (us)" mean median prepare mounts remove "s/o"
o_med=$(snap_median overlayfs median_us)
for c in "${CASES[@]}"; do
    case $c in
        overlayfs) label="overlayfs" ;;
        strata) label="strata (layers containerd applied)" ;;
        strata-held) label="strata (layers the CLI imported)" ;;
    esac
    med=$(snap_median "$c" median_us)
    printf '%-48s %8.0f %8.0f %8.0f %8.0f %8.0f %6.2f\n' "$label" "$(snap_median "$c" mean_us)" "$med" \
        "$(snap_median "$c" prepare_us)" "$(snap_median "$c" mounts_us)" "$(snap_median "$c" remove_us)" \
        "$(ratio "$med" "$o_med")"
done
