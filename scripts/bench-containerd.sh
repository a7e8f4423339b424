#!/usr/bin/env bash
# containerd with its built-in overlayfs snapshotter against containerd with strata-snapshotter
# (proxy plugin), in one run, each into a fresh private containerd (own root, state, sockets; CRI
# off): `ctr images import` (unpack included) of the benchmark rootfs image, and `ctr run --rm`
# of a trivial command. Median of RUNS, ratio strata/overlayfs.
#
# Usage: sudo scripts/bench-containerd.sh [BENCHDIR] [RUNS]   (default /var/tmp/strata-bench, 5)
# Not measured yet (issue 13): the pull with unpack through containerd's Go client, into an empty
# store and over layers `strata image import` holds, and Prepare+Mounts+Remove latency.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" bench-containerd
need_root
find_cargo
BENCH=${1:-/var/tmp/strata-bench}
RUNS=${2:-5}
scripts/setup.sh
cargo build --release -p strata-cli -p strata-snapshotter --quiet
SNAP=$PWD/target/release/strata-snapshotter
scripts/make-rootfs.sh "$BENCH" >/dev/null
W=$(mktemp -d /tmp/strata-bc.XXXXXX)   # short: unix socket paths are limited to 108 bytes
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
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
stop_all() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
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
