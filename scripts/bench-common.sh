# Sourced by bench-import.sh, bench-commit.sh and bench-export.sh, with their arguments
# [BENCHDIR] [RUNS]: installs what they need, builds strata (release), makes or reuses the
# benchmark rootfs (make-rootfs.sh) and sets
#   S       the strata binary          BENCH  BENCHDIR (default /var/tmp/strata-bench)
#   RUNS    runs per line ($2, default BENCH_RUNS)
#   W       a fresh scratch dir: $BENCH_WORK, else $BENCH/$1-work (removed at exit unless KEEP=1)
# and median (of numbers on stdin, one per line).
# usage: source scripts/bench-common.sh NAME DEFAULT_RUNS "$@"
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" bench-common
find_cargo
BENCH_NAME=$1 BENCH_RUNS=$2
shift 2
BENCH=${1:-/var/tmp/strata-bench}
RUNS=${2:-$BENCH_RUNS}
scripts/setup.sh
cargo build --release -p strata --quiet
S=$PWD/target/release/strata
scripts/make-rootfs.sh "$BENCH" >/dev/null
W=${BENCH_WORK:-$BENCH/$BENCH_NAME-work}
rm -rf "$W"; mkdir -p "$W"
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$W"' EXIT
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
