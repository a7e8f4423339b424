#!/usr/bin/env bash
# Run strata-fuse tests with FUSE over io_uring: turns the fuse module's enable_uring parameter
# on for the run (a set-up step strata never takes by itself) and restores it afterwards;
# STRATA_FUSE_URING=on makes every strata-fuse the tests start use the ring or fail.
#   scripts/test-fuse-uring.sh [CARGO TEST ARGS...]    default: -p strata-fuse
set -euo pipefail
PARAM=/sys/module/fuse/parameters/enable_uring
[ -w "$PARAM" ] || { echo "test-fuse-uring: $PARAM missing or not writable (root, Linux 6.14+)" >&2; exit 1; }
OLD=$(cat "$PARAM")
restore() { if [ "$OLD" = Y ]; then echo 1 > "$PARAM"; else echo 0 > "$PARAM"; fi; }
trap restore EXIT
echo 1 > "$PARAM"
cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then set -- -p strata-fuse; fi
STRATA_FUSE_URING=on cargo test "$@"
