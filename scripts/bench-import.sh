#!/usr/bin/env bash
# Import benchmark: strata image import (digests verified, blob stored, layer unpacked) against
# `tar -xzf` of the identical layer blob and against `umoci unpack` of the same image, in one run;
# then the same rootfs split into four layers (as bench-pull.sh pulls it), imported with --jobs 1
# (one layer after the other), the default and --jobs 4.
#
# Usage: sudo scripts/bench-import.sh [BENCHDIR] [RUNS]   (default /var/tmp/strata-bench, 5 runs)
# Each run starts from an empty store / target directory; page cache is warm for the source.
# BENCH_WORK=/dev/shm/x puts stores and targets on tmpfs: that measures the CPU cost.
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh" import 5 "$@"
STRATA=$S
layer_mb=$(du -m "$BENCH/rootfs.tar.gz" | cut -f1)
files=$(tar -tzf "$BENCH/rootfs.tar.gz" | wc -l)
echo "layer: $BENCH/rootfs.tar.gz (${layer_mb} MB compressed, $files entries, $(du -sm "$BENCH/rootfs" | cut -f1) MB unpacked)"
cat "$BENCH/rootfs.tar.gz" > /dev/null

# median of RUNS timings (seconds) of: prepare; timed command
timeit() { # label prep cmd...
    local label=$1 prep=$2; shift 2
    for _ in $(seq "$RUNS"); do
        eval "$prep"; sync
        local s e; s=$(date +%s.%N); "$@" >/dev/null; sync; e=$(date +%s.%N)
        echo "$e - $s" | bc
    done | median
}
t_strata=$(timeit strata "rm -rf $W/root" "$STRATA" --root "$W/root" image import "$BENCH/oci:rootfs")
t_tar=$(timeit tar "rm -rf $W/tar; mkdir $W/tar" tar -xzf "$BENCH/rootfs.tar.gz" -C "$W/tar")
t_umoci=$(timeit umoci "rm -rf $W/umoci" umoci unpack --image "$BENCH/oci:rootfs" "$W/umoci")
printf '\n%-44s %10s %12s\n' "import of a ${layer_mb} MB layer (median of $RUNS)" "seconds" "strata/x"
printf '%-44s %10.3f %12s\n' "strata image import (verify + store + unpack)" "$t_strata" "1.00"
printf '%-44s %10.3f %12.2f\n' "tar -xzf (no verification)" "$t_tar" "$(echo "$t_strata / $t_tar" | bc -l)"
printf '%-44s %10.3f %12.2f\n' "umoci unpack" "$t_umoci" "$(echo "$t_strata / $t_umoci" | bc -l)"

four_layers
t_j1=$(timeit strata "rm -rf $W/root" "$STRATA" --root "$W/root" image import --jobs 1 "$L:layers")
t_jd=$(timeit strata "rm -rf $W/root" "$STRATA" --root "$W/root" image import "$L:layers")
t_j4=$(timeit strata "rm -rf $W/root" "$STRATA" --root "$W/root" image import --jobs 4 "$L:layers")
printf '\n%-44s %10s %12s\n' "import of the rootfs in 4 layers (median of $RUNS)" "seconds" "x/default"
printf '%-44s %10.3f %12.2f\n' "strata image import --jobs 1" "$t_j1" "$(echo "$t_j1 / $t_jd" | bc -l)"
printf '%-44s %10.3f %12s\n' "strata image import (default jobs: $(nproc | awk '{print ($1<4?$1:4)}'))" "$t_jd" "1.00"
printf '%-44s %10.3f %12.2f\n' "strata image import --jobs 4" "$t_j4" "$(echo "$t_j4 / $t_jd" | bc -l)"
rm -rf "$W"
