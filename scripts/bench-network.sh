#!/usr/bin/env bash
# Network set-up benchmark: wall time of `run --rm IMAGE true` (busybox) with
#   strata run --network bridge     (CNI bridge + host-local + portmap + the container's files)
#   strata run --network none       (a new namespace with lo only: the baseline)
#   podman run --network bridge     (podman's own default network stack)
# (podman with nofile and nproc at 1024, as the podman tests: these machines lack CAP_SYS_RESOURCE
# for podman's defaults)
# median of RUNS (default 5) each, in one run of the script, and what bridge adds over none for
# each (podman's own --network none is its baseline), printed with the ratios.
#
# Usage: sudo scripts/bench-network.sh [RUNS]
#   STRATA_BIN=target/debug/strata  use that binary instead of building a release one
#   KEEP=1                          keep the scratch directory
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" bench-network
find_cargo
RUNS=${1:-5}
if [ -n "${STRATA_BIN:-}" ]; then
    S=$(realpath "$STRATA_BIN")
else
    scripts/setup.sh
    cargo build --release -p strata-cli --quiet
    S=$PWD/target/release/strata
fi
W=$(mktemp -d /var/tmp/strata-bench-network.XXXXXX)
PODMAN_RUN=/run/strata-bench-network-podman
podman_() { podman --root "$W/podman" --runroot "$PODMAN_RUN" --storage-driver overlay --events-backend none "$@"; }
cleanup() {
    podman_ rm -af >/dev/null 2>&1 || true
    for m in $(grep -o " $W/[^ ]*" /proc/self/mountinfo | sort -r); do umount -l "$m" 2>/dev/null || true; done
    # This root's networks (their bridges) go with it.
    for n in $("$S" --root "$W/root" network ls --json 2>/dev/null | python3 -c 'import json,sys; [print(n["Bridge"]) for n in json.load(sys.stdin)]' 2>/dev/null); do
        ip link del "$n" 2>/dev/null || true
    done
    rm -rf "$PODMAN_RUN"
    [ "${KEEP:-0}" = 1 ] || rm -rf "$W"
}
trap cleanup EXIT
scripts/make-fixtures.sh "$W/fx" >/dev/null 2>&1
"$S" --root "$W/root" image import "$W/fx/oci:busybox" --name busybox >/dev/null
"$S" --root "$W/root" save busybox -o "$W/busybox.tar"
podman_ load -q -i "$W/busybox.tar" >/dev/null
ULIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
timeit() { # cmd...: median of RUNS wall times in seconds, after one warm-up
    "$@" >/dev/null 2>&1 || { echo "bench-network: $* failed" >&2; "$@" >&2; exit 1; }
    for _ in $(seq "$RUNS"); do
        local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N)
        echo "$e - $s" | bc
    done | median
}
t_bridge=$(timeit "$S" --root "$W/root" run --rm --network bridge busybox -- true)
t_none=$(timeit "$S" --root "$W/root" run --rm --network none busybox -- true)
t_pbridge=$(timeit podman_ run --rm "${ULIMITS[@]}" --network bridge busybox:latest true)
t_pnone=$(timeit podman_ run --rm "${ULIMITS[@]}" --network none busybox:latest true)
add_strata=$(echo "$t_bridge - $t_none" | bc -l)
add_podman=$(echo "$t_pbridge - $t_pnone" | bc -l)
printf '%-40s %10s %10s\n' "run --rm busybox true" seconds "÷ strata none"
printf '%-40s %10.3f %10.2f\n' "strata --network none" "$t_none" 1
printf '%-40s %10.3f %10.2f\n' "strata --network bridge" "$t_bridge" "$(echo "$t_bridge / $t_none" | bc -l)"
printf '%-40s %10.3f %10.2f\n' "podman --network none" "$t_pnone" "$(echo "$t_pnone / $t_none" | bc -l)"
printf '%-40s %10.3f %10.2f\n' "podman --network bridge" "$t_pbridge" "$(echo "$t_pbridge / $t_none" | bc -l)"
printf 'bridge set-up adds: strata %.3f s, podman %.3f s (strata/podman %.2f)\n' \
    "$add_strata" "$add_podman" "$(echo "$add_strata / $add_podman" | bc -l 2>/dev/null || echo nan)"
echo "(median of $RUNS runs each, after one warm-up; $(nproc) CPUs, load $(cut -d' ' -f1 /proc/loadavg))"
