#!/usr/bin/env bash
# Commit benchmark, in one run:
#  1. an upper dir holding a whole 150+ MB rootfs: strata container commit (gzip) against
#     `tar -c | gzip` of the same tree and `umoci repack` of the same change;
#  2. a one-file change over that rootfs image: strata container commit against `umoci repack`.
# Usage: sudo scripts/bench-commit.sh [BENCHDIR] [RUNS]   (default /var/tmp/strata-bench, 3)
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh" commit 3 "$@"
export STRATA_ROOT=$W/root
FX=$W/fx
scripts/make-fixtures.sh "$FX" >/dev/null
$S image import "$FX/oci:busybox" >/dev/null
$S image import "$BENCH/oci:rootfs" --name rootfs >/dev/null
secs() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc; }
ROOTFS=$BENCH/rootfs
MB=$(du -sm "$ROOTFS" | cut -f1)

# 1. Full tree in the upper dir.
$S container create busybox full >/dev/null
UPPER=$($S container inspect full | python3 -c 'import json,sys; print(json.load(sys.stdin)["upper"])')
cp -a "$ROOTFS/." "$UPPER/"
t_full=$(for i in $(seq "$RUNS"); do secs $S container commit full "full-$i"; done | median)
t_tgz=$(for i in $(seq "$RUNS"); do secs bash -c "tar -C '$UPPER' -cf - . | gzip > '$W/t.tar.gz'"; done | median)
t_tgz1=$(for i in $(seq "$RUNS"); do secs bash -c "tar -C '$UPPER' -cf - . | gzip -1 > '$W/t.tar.gz'"; done | median)
umoci unpack --image "$FX/oci:busybox" "$W/bundle-full" >/dev/null
rm -rf "$W/bundle-full/rootfs/"*
cp -a "$ROOTFS/." "$W/bundle-full/rootfs/"
t_umoci_full=$(for i in $(seq "$RUNS"); do secs umoci repack --image "$FX/oci:full-$i" "$W/bundle-full"; done | median)

# 2. One file changed over the rootfs image.
$S container create rootfs one >/dev/null
at=$($S container mount one)
echo changed >> "$at/etc/hostname"
$S container umount one
t_one=$(for i in $(seq "$RUNS"); do secs $S container commit one "one-$i"; done | median)
umoci unpack --image "$BENCH/oci:rootfs" "$W/bundle-one" >/dev/null
echo changed >> "$W/bundle-one/rootfs/etc/hostname"
cp -a "$BENCH/oci" "$W/oci-copy"
t_umoci_one=$(for i in $(seq "$RUNS"); do secs umoci repack --image "$W/oci-copy:one-$i" "$W/bundle-one"; done | median)

r() { echo "$1 / $2" | bc -l; }
printf '\n%-52s %10s %10s\n' "commit (median of $RUNS)" seconds "strata/x"
printf '%-52s %10.3f %10s\n' "strata commit, upper = ${MB} MB rootfs (gzip)" "$t_full" 1.00
printf '%-52s %10.3f %10.2f\n' "tar -c | gzip, same tree" "$t_tgz" "$(r "$t_full" "$t_tgz")"
printf '%-52s %10.3f %10.2f\n' "tar -c | gzip -1, same tree" "$t_tgz1" "$(r "$t_full" "$t_tgz1")"
printf '%-52s %10.3f %10.2f\n' "umoci repack, same change" "$t_umoci_full" "$(r "$t_full" "$t_umoci_full")"
printf '%-52s %10.3f %10s\n' "strata commit, one file over the rootfs image" "$t_one" 1.00
printf '%-52s %10.3f %10.2f\n' "umoci repack, same one-file change" "$t_umoci_one" "$(r "$t_one" "$t_umoci_one")"
