#!/usr/bin/env bash
# Run the strata-fuse differential test (kernel overlayfs vs strata-fuse) over many seeds.
# usage: scripts/fuzz-fuse.sh [SEEDS] [OPS_PER_SEED] [FIRST_SEED]   (needs root)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" fuzz-fuse
find_cargo
export STRATA_DIFF_SEEDS="${1:-2000}"
export STRATA_DIFF_OPS="${2:-60}"
export STRATA_DIFF_SEED_BASE="${3:-1}"
echo "differential fuzz: $STRATA_DIFF_SEEDS seeds x $STRATA_DIFF_OPS ops from seed $STRATA_DIFF_SEED_BASE"
exec cargo test -p strata-fuse --test differential -- --nocapture
