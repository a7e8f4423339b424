#!/usr/bin/env bash
# Sparse-file import benchmark: a layer holding one 10 GiB sparse file (50 data extents of 1 MiB,
# some past 8 GiB), written by GNU tar in each sparse format it has (old GNU, PAX 0.0, 0.1, 1.0).
# Side by side: strata image import (verify + store + unpack) of the OCI image, `tar -xf` of the
# identical layer tar (GNU tar recreates the holes) and `umoci unpack` of the same image.
#
# Usage: sudo scripts/bench-sparse.sh [BENCHDIR] [RUNS]   (default /var/tmp/strata-bench, 5 runs)
# Targets go to $BENCH_WORK (default BENCHDIR/sparse-work): put it on a small tmpfs to see that no
# tool may write the holes. Prints, per format, the median seconds and the allocated MB of the
# unpacked file (a tool that writes the holes shows 10240). umoci writes the holes (about a minute
# and 10 GiB of disk per run): it runs UMOCI_RUNS times (default 1).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BENCH=${1:-/var/tmp/strata-bench}
RUNS=${2:-5}
UMOCI_RUNS=${UMOCI_RUNS:-1}
scripts/setup.sh
cargo build --release -p strata-cli --quiet
S=$PWD/target/release/strata
W=${BENCH_WORK:-$BENCH/sparse-work}
SRC=$BENCH/sparse-src
mkdir -p "$BENCH" "$W"
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$W"/*' EXIT
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# The source: made once (seeded data, so reruns are identical).
if [ ! -f "$SRC/.complete" ]; then
    rm -rf "$SRC"; mkdir -p "$SRC/tree"
    python3 - "$SRC/tree/big" <<'PY'
import os, random, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.ftruncate(fd, 10 << 30)
for i in range(50):  # 1 MiB at 10 MiB + i * 200 MiB: the last ones past 8 GiB
    os.pwrite(fd, random.Random(i).randbytes(1 << 20), (i * 200 + 10) << 20)
os.close(fd)
PY
    touch -d @1700000000 "$SRC/tree/big" "$SRC/tree"
    touch "$SRC/.complete"
fi
data_mb=$(( $(du -k "$SRC/tree/big" | cut -f1) / 1024 ))
echo "source: $SRC/tree/big, $(( $(stat -c %s "$SRC/tree/big") >> 30 )) GiB apparent, ${data_mb} MB of data"

formats=("gnu:--format=gnu" "pax-0.0:--format=posix --sparse-version=0.0"
         "pax-0.1:--format=posix --sparse-version=0.1" "pax-1.0:--format=posix --sparse-version=1.0")
for f in "${formats[@]}"; do
    name=${f%%:*} args=${f#*:}
    [ -f "$SRC/$name.tar" ] || tar --sparse $args -cf "$SRC/$name.tar" -C "$SRC/tree" .
    python3 - "$SRC/$name.tar" "$SRC/oci-$name" <<'PY'
import json, os, shutil, sys
sys.path.insert(0, os.path.join(os.getcwd(), "scripts/fixtures"))
from ocilayout import Layout, MT_CONFIG, MT_LAYER_TAR, MT_MANIFEST, canonical_json
tar, out = sys.argv[1], sys.argv[2]
shutil.rmtree(out, ignore_errors=True)
lay = Layout(out, create=True)
data = open(tar, "rb").read()
layer = lay.put_blob(data, MT_LAYER_TAR)
cfg = lay.put_blob(canonical_json({"architecture": "amd64", "os": "linux",
                                   "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]}}), MT_CONFIG)
man = lay.put_blob(canonical_json({"schemaVersion": 2, "mediaType": MT_MANIFEST, "config": cfg,
                                   "layers": [layer]}), MT_MANIFEST)
lay.tag(man, "t")
PY
done
cat "$SRC"/*.tar >/dev/null

# median of N timings (seconds) of: prepare; timed command; "fails" if a run failed (its message
# on stderr)
timeit() { # runs prep cmd...
    local runs=$1 prep=$2; shift 2
    local times=() s e
    for _ in $(seq "$runs"); do
        eval "$prep"; sync
        s=$(date +%s.%N)
        if ! "$@" >/dev/null 2>"$W/err"; then
            echo "  $1 failed: $(tail -1 "$W/err")" >&2; echo fails; return
        fi
        sync; e=$(date +%s.%N)
        times+=("$(echo "$e - $s" | bc)")
    done
    printf '%s\n' "${times[@]}" | median
}
row() { # format label seconds alloc strata_seconds
    if [ "$3" = fails ]; then
        printf '%-10s %-34s %10s %10s %12s\n' "$1" "$2" fails - -
    elif [ "$2" = "strata image import" ] || [ "${5:-}" = fails ]; then
        printf '%-10s %-34s %10.3f %10s %12s\n' "$1" "$2" "$3" "$4" "1.00"
    else
        printf '%-10s %-34s %10.3f %10s %12.3f\n' "$1" "$2" "$3" "$4" "$(echo "$5 / $3" | bc -l)"
    fi
}
alloc_mb() { local f; f=$(find "$@" -type f -name big 2>/dev/null | head -1); [ -n "$f" ] && echo $(( $(du -k "$f" | cut -f1) / 1024 )) || echo "-"; }

printf '\n%-10s %-34s %10s %10s %12s\n' "format" "import of a 10 GiB sparse file" "seconds" "alloc MB" "strata/x"
for f in "${formats[@]}"; do
    name=${f%%:*}
    t_s=$(timeit "$RUNS" "rm -rf $W/root" "$S" --root "$W/root" image import "$SRC/oci-$name:t")
    a_s=$(alloc_mb "$W/root/layers")
    t_t=$(timeit "$RUNS" "rm -rf $W/root $W/tar; mkdir $W/tar" tar -xf "$SRC/$name.tar" -C "$W/tar")
    a_t=$(alloc_mb "$W/tar")
    t_u=$(timeit "$UMOCI_RUNS" "rm -rf $W/tar $W/umoci" umoci unpack --image "$SRC/oci-$name:t" "$W/umoci")
    a_u=$(alloc_mb "$W/umoci")
    rm -rf "$W/umoci"
    row "$name" "strata image import" "$t_s" "$a_s"
    row "" "tar -xf" "$t_t" "$a_t" "$t_s"
    row "" "umoci unpack" "$t_u" "$a_u" "$t_s"
done
