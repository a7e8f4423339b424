# Sourced by bench-import.sh, bench-commit.sh and bench-export.sh, with their arguments
# [BENCHDIR] [RUNS]: installs what they need, builds strata (release), makes or reuses the
# benchmark rootfs (make-rootfs.sh) and sets
#   S       the strata binary          BENCH  BENCHDIR (default /var/tmp/strata-bench)
#   RUNS    runs per line ($2, default BENCH_RUNS)
#   W       a fresh scratch dir: $BENCH_WORK, else $BENCH/$1-work (removed at exit unless KEEP=1)
# and median (of numbers on stdin, one per line); four_layers builds the four-layer image $L.
# usage: source scripts/bench-common.sh NAME DEFAULT_RUNS "$@"
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" bench-common
find_cargo
BENCH_NAME=$1 BENCH_RUNS=$2
shift 2
BENCH=${1:-/var/tmp/strata-bench}
RUNS=${2:-$BENCH_RUNS}
scripts/setup.sh
cargo build --release -p strata-cli --quiet
S=$PWD/target/release/strata
scripts/make-rootfs.sh "$BENCH" >/dev/null
W=${BENCH_WORK:-$BENCH/$BENCH_NAME-work}
rm -rf "$W"; mkdir -p "$W"
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$W"' EXIT
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# four_layers: the benchmark rootfs split into four layers (base, usr/lib, usr/share, the rest of
# usr) as the OCI image $L:layers (L=$BENCH/oci-layers), built once with umoci and cached.
four_layers() {
    L=$BENCH/oci-layers
    [ -f "$L/.complete" ] && return 0
    echo "bench: splitting $BENCH/rootfs into four layers (once)" >&2
    rm -rf "$L" "$BENCH/layers-bundle"
    umoci init --layout "$L"
    umoci new --image "$L:layers"
    umoci unpack --image "$L:layers" "$BENCH/layers-bundle" >/dev/null
    local R=$BENCH/layers-bundle/rootfs base rest
    stage() { # COMMENT PATH...
        local c=$1; shift
        for p in "$@"; do
            mkdir -p "$R/$(dirname "$p")"
            cp -a "$BENCH/rootfs/$p" "$R/$p"
        done
        umoci repack --refresh-bundle --image "$L:layers" --history.comment "$c" "$BENCH/layers-bundle" >/dev/null
    }
    mkdir -p "$R/usr"
    base=$(cd "$BENCH/rootfs" && ls -A | grep -vx usr)
    # shellcheck disable=SC2086
    stage "base" $base
    stage "usr/lib" usr/lib
    stage "usr/share" usr/share
    rest=$(cd "$BENCH/rootfs" && ls -A usr | grep -vx -e lib -e share | sed 's|^|usr/|')
    # shellcheck disable=SC2086
    stage "usr rest" $rest
    rm -rf "$BENCH/layers-bundle"
    touch "$L/.complete"
}
