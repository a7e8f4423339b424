#!/usr/bin/env bash
# Export benchmark, in one run: the debootstrap rootfs image (one gzip layer, see make-rootfs.sh)
# written out by `strata image export` and by `skopeo copy` from the same OCI layout, the tool a
# user would otherwise reach for, in each format:
#   oci             strata image export rootfs DIR:tag      skopeo copy oci:SRC:rootfs oci:DIR:tag
#   oci-archive     ... --format oci-archive FILE:tag        skopeo copy ... oci-archive:FILE:tag
#   docker-archive  ... --format docker-archive FILE:tag     skopeo copy ... docker-archive:FILE:tag
# Each line is the median of RUNS fresh exports, synced to disk (both fsync what they write;
# the final `sync` makes the two finish at the same point).
# Both write docker-archive layers uncompressed (strata checks each against the config's diff_id
# on the way), as `docker save` does.
# Usage: sudo scripts/bench-export.sh [BENCHDIR] [RUNS]   (default /var/tmp/strata-bench, 3)
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh" export 3 "$@"
export STRATA_ROOT=$W/root
$S image import "$BENCH/oci:rootfs" --name rootfs >/dev/null
secs() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; sync; e=$(date +%s.%N); echo "$e - $s" | bc; }
run() { # label dest-path command...
    local dest=$2; shift 2
    for _ in $(seq "$RUNS"); do
        rm -rf "$dest"; sync; echo 3 > /proc/sys/vm/drop_caches
        secs "$@"
    done | median
}
SRC="oci:$BENCH/oci:rootfs"
declare -A T
T[s_oci]=$(run x "$W/o1" $S image export rootfs "$W/o1:rootfs")
T[k_oci]=$(run x "$W/o2" skopeo copy --quiet "$SRC" "oci:$W/o2:rootfs")
T[s_oar]=$(run x "$W/a1.tar" $S image export rootfs "$W/a1.tar:rootfs" --format oci-archive)
T[k_oar]=$(run x "$W/a2.tar" skopeo copy --quiet "$SRC" "oci-archive:$W/a2.tar:rootfs")
T[s_dar]=$(run x "$W/d1.tar" $S image export rootfs "$W/d1.tar:rootfs" --format docker-archive)
T[k_dar]=$(run x "$W/d2.tar" skopeo copy --quiet "$SRC" "docker-archive:$W/d2.tar:rootfs:latest")
# The outputs must be loadable: skopeo reads each of strata's.
skopeo inspect --raw "oci:$W/o1:rootfs" >/dev/null
skopeo inspect --raw "oci-archive:$W/a1.tar:rootfs" >/dev/null
skopeo inspect --raw "docker-archive:$W/d1.tar" >/dev/null
size() { du -sm "$1" | cut -f1; }
r() { echo "$1 / $2" | bc -l; }
printf '\n%-16s %12s %12s %14s %10s %10s\n' "export (median of $RUNS)" "strata s" "skopeo s" "strata/skopeo" "strata MB" "skopeo MB"
for f in oci:o oar:a dar:d; do
    k=${f%%:*}; p=${f#*:}
    case $k in oci) n=oci; a="$W/${p}1"; b="$W/${p}2" ;; oar) n=oci-archive; a="$W/${p}1.tar"; b="$W/${p}2.tar" ;;
        dar) n=docker-archive; a="$W/${p}1.tar"; b="$W/${p}2.tar" ;; esac
    printf '%-16s %12.3f %12.3f %14.2f %10s %10s\n' "$n" "${T[s_$k]}" "${T[k_$k]}" \
        "$(r "${T[s_$k]}" "${T[k_$k]}")" "$(size "$a")" "$(size "$b")"
done
