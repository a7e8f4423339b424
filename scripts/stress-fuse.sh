#!/usr/bin/env bash
# Long form of the strata-fuse stress tests (fuse/tests/stress.rs, fuse/tests/load.rs): the
# model-checking stress on kernel overlayfs and strata-fuse over copies of the same layers, then
# the link/unlink race with readers. Needs root.
#
# usage: scripts/stress-fuse.sh [SECS_PER_BACKEND] [SEED] [THREADS]
#   defaults: 300 s per backend (10 minutes in all), a seed from the clock (printed), 4 threads.
#   STRATA_LINK_RACE_ITERS (default 20000) sizes the link race.
#
# fsstress (xfstests) is not packaged by Debian; when stress-ng is installed
# (apt-get install stress-ng) it runs meanwhile inside each mount as extra load, in a directory
# of its own (the checked threads keep theirs), like the fsstress -p 4 of issue 10.
set -euo pipefail
cd "$(dirname "$0")/.."
per="${1:-300}"
seed="${2:-$(date +%s)}"
export STRATA_STRESS_SECS=$((per * 2))
export STRATA_STRESS_SEED="$seed"
export STRATA_STRESS_THREADS="${3:-4}"
if command -v stress-ng >/dev/null; then
    export STRATA_STRESS_BACKGROUND="stress-ng --temp-path {} --dir 1 --link 1 --symlink 1 --rename 1 --filename 1 --hdd 1 --hdd-bytes 8M --metrics-brief -q"
    bg="stress-ng (dir, link, symlink, rename, filename, hdd)"
else
    bg="none (stress-ng is not installed; fsstress is not packaged by Debian)"
fi
echo "model-checking stress: ${per} s per backend, seed $seed, $STRATA_STRESS_THREADS threads, background: $bg"
cargo test -p strata-fuse --test stress -- --nocapture
export STRATA_LINK_RACE_ITERS="${STRATA_LINK_RACE_ITERS:-20000}"
echo "link/unlink race with readers: $STRATA_LINK_RACE_ITERS rounds per backend"
cargo test -p strata-fuse --test load link_unlink_loop_with_readers -- --nocapture
