#!/usr/bin/env bash
# Lazy pull benchmark (issue 27): time to the first output of `python3 -c 'print(1)'` from an
# empty store, with the image in a loopback registry behind a 100 Mbit/s link, for
#   strata pull --lazy + strata run      (only the TOCs, then the files python reads, on demand)
#   strata pull + strata run             (every layer fetched, verified and unpacked first)
#   podman pull + podman run             (overlay storage, fresh root)
# and the bytes that had come through the link when the output appeared. The image is the
# benchmark rootfs with python3 (make-rootfs.sh, INCLUDE below: over 500 MB unpacked) in four
# layers, pushed as eStargz by `strata push --compression estargz` (a valid gzip image: podman
# and the full pull read it as any other). The link is scripts/throttle-proxy.py, a TCP proxy
# with a token bucket. Every round starts from an empty store of its own; the three are
# interleaved. No store is deleted before the end: on ext4 without a journal (these VMs' disk), every
# inode made within a minute or so of a mass deletion costs about 0.6 ms (the allocator rescans the
# recently freed inodes), so deleting the last round's 36,000 files just before a round would
# charge it for the previous one (docs/BENCHMARKS.md, lazy section). A user's pull does not follow
# such a deletion.
#
# Usage: sudo scripts/bench-lazy.sh [BENCHDIR] [RUNS]   (default /var/tmp/strata-bench-lazy, 3)
# Env: RATE (bytes/s, default 12500000 = 100 Mbit/s), INCLUDE (make-rootfs.sh packages).
export INCLUDE=${INCLUDE-perl,python3,python3-numpy,python3-scipy,gcc,g++}
set -- "${1:-/var/tmp/strata-bench-lazy}" "${2:-3}"
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh" lazy 3 "$@"
command -v docker-registry >/dev/null || { echo "bench-lazy: docker-registry not installed" >&2; exit 1; }
RATE=${RATE:-12500000}
cargo build --release -p strata-fuse --quiet   # lazy layers are served by strata-fuse, found next to strata

four_layers   # $L: the rootfs split into four layers (bench-common.sh)
mb=$(du -sm "$BENCH/rootfs" | cut -f1)
[ "$mb" -ge 500 ] || echo "bench-lazy: warning: the rootfs is only $mb MB (INCLUDE=$INCLUDE)" >&2

# The registry on a free port, and the throttled link in front of it.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$W/registry"
cat > "$W/registry/config.yml" <<CFG
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $W/registry/data}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$PORT}
CFG
docker-registry serve "$W/registry/config.yml" >"$W/registry/log" 2>&1 &
REG_PID=$!
python3 scripts/throttle-proxy.py "$W/proxy.port" "127.0.0.1:$PORT" "$RATE" "$W/proxy.count" &
PROXY_PID=$!
# Round N's stores: $W/root-lazy-N, $W/root-full-N, $W/podman-N (run root /run/strata-bench-lazy-N).
N=0
podman_() { podman --root "$W/podman-$N" --runroot "/run/strata-bench-lazy-$N" --storage-driver overlay --events-backend none "$@"; }
cleanup() {
    for m in $(grep -o " $W/[^ ]*" /proc/self/mountinfo | sort -r); do umount -l "$m" 2>/dev/null || true; done
    rm -rf /run/strata-bench-lazy-*
    kill "$REG_PID" "$PROXY_PID" 2>/dev/null || true
    [ "${KEEP:-0}" = 1 ] || rm -rf "$W"
}
trap cleanup EXIT
for _ in $(seq 100); do
    [ -s "$W/proxy.port" ] && python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/v2/')" 2>/dev/null && break
    sleep 0.1
done
PPORT=$(cat "$W/proxy.port")

# The eStargz image, pushed straight to the registry (not through the link).
"$S" --root "$W/src" image import "$L:layers" --name bench >/dev/null
"$S" --root "$W/src" push -q --tls-verify=false --compression estargz bench "127.0.0.1:$PORT/bench:esgz" >/dev/null
REF=127.0.0.1:$PPORT/bench:esgz
echo "image: $REF, 4 eStargz layers, $mb MB unpacked; link $((RATE * 8 / 1000000)) Mbit/s"

ULIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
bytes() { cat "$W/proxy.count"; }
b0=0
# first_output CMD...: runs CMD; prints "SECONDS BYTES EXIT" where SECONDS is the time from the
# start to its first line of output, BYTES what had come through the link by then, and EXIT the
# time to the command's end; fails unless that line is "1".
first_output() {
    local s e
    s=$(date +%s.%N)
    "$@" 2>"$W/err" | {
        IFS= read -r line
        echo "$line" >"$W/line"
        date +%s.%N >"$W/t1"
        bytes >"$W/b1"
        cat >/dev/null
    } || true
    e=$(date +%s.%N)
    [ "$(cat "$W/line")" = 1 ] || { echo "bench-lazy: $1: no output 1 (got '$(cat "$W/line")'): $(tail -3 "$W/err")" >&2; exit 1; }
    echo "$(echo "$(cat "$W/t1") - $s" | bc) $(($(cat "$W/b1") - b0)) $(echo "$e - $s" | bc)"
}
lazy_run() { local r=$W/root-lazy-$N; "$S" --root "$r" pull -q --lazy --tls-verify=false "$REF" >/dev/null && "$S" --root "$r" run --rm "$REF" python3 -c 'print(1)'; }
full_run() { local r=$W/root-full-$N; "$S" --root "$r" pull -q --tls-verify=false "$REF" >/dev/null && "$S" --root "$r" run --rm "$REF" python3 -c 'print(1)'; }
podman_run() { podman_ pull -q --tls-verify=false "$REF" >/dev/null && podman_ run --rm "${ULIMITS[@]}" --network none "$REF" python3 -c 'print(1)'; }

: >"$W/lazy"; : >"$W/full"; : >"$W/podman.t"
for N in $(seq "$RUNS"); do
    sync; b0=$(bytes); first_output lazy_run >>"$W/lazy"
    sync; b0=$(bytes); first_output full_run >>"$W/full"
    sync; b0=$(bytes); first_output podman_run >>"$W/podman.t"
done
med() { cut -d' ' -f"$2" "$1" | median; }
t_lazy=$(med "$W/lazy" 1) b_lazy=$(med "$W/lazy" 2) x_lazy=$(med "$W/lazy" 3)
t_full=$(med "$W/full" 1) b_full=$(med "$W/full" 2) x_full=$(med "$W/full" 3)
t_pod=$(med "$W/podman.t" 1) b_pod=$(med "$W/podman.t" 2) x_pod=$(med "$W/podman.t" 3)
printf "\n%-30s %12s %8s %10s %8s %12s\n" "median of $RUNS" "first output" "x full" "MB by then" "x full" "command end"
row() { printf "%-30s %12.2f %8.2f %10.1f %8.2f %12.2f\n" "$1" "$2" "$(echo "$2 / $t_full" | bc -l)" "$(echo "$3 / 1000000" | bc -l)" "$(echo "$3 / $b_full" | bc -l)" "$4"; }
row "strata pull --lazy + run" "$t_lazy" "$b_lazy" "$x_lazy"
row "strata pull + run" "$t_full" "$b_full" "$x_full"
row "podman pull + run" "$t_pod" "$b_pod" "$x_pod"
