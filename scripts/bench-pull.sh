#!/usr/bin/env bash
# Pull benchmark: time from a local registry to a runnable image, in one run, for
#   strata pull                          (fetch + verify + store + unpack every layer)
#   skopeo copy docker:// oci: + umoci unpack
#   podman pull                          (overlay storage, fresh root)
#   ctr images pull                      (containerd with its overlayfs snapshotter, a fresh root
#                                         each round; only where containerd and ctr are installed)
# The image is the benchmark rootfs (make-rootfs.sh) split into four layers, pushed to Debian's
# docker-registry on 127.0.0.1 (plain HTTP). Every run starts from an empty destination.
#
# Usage: sudo scripts/bench-pull.sh [BENCHDIR] [RUNS]   (default /var/tmp/strata-bench, 3 runs)
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh" pull 3 "$@"
command -v docker-registry >/dev/null || { echo "bench-pull: docker-registry not installed" >&2; exit 1; }

four_layers   # $L: the rootfs split into four layers (bench-common.sh)

REG_PID=
PODMAN_RUN=/run/strata-bench-podman
cleanup() {
    [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null
    # The last round's containerd (its rounds run in timeit's command substitution, a subshell:
    # the pid comes back in a file).
    [ -f "$W/containerd.pid" ] && kill "$(cat "$W/containerd.pid")" 2>/dev/null
    rm -rf "$PODMAN_RUN"
    [ "${KEEP:-0}" = 1 ] || rm -rf "$W"
}
trap cleanup EXIT
local_registry "$W/registry"   # REG_ADDR, REG_PID (lib.sh)
REF=$REG_ADDR/bench:1
skopeo copy -q --dest-tls-verify=false "oci:$L:layers" "docker://$REF"
mb=$(du -sm "$BENCH/rootfs" | cut -f1)
echo "image: $REF, 4 layers, $mb MB unpacked"

# median of RUNS timings (seconds) of: prepare; timed command (sync included)
timeit() { # prep cmd...
    local prep=$1; shift
    for _ in $(seq "$RUNS"); do
        eval "$prep"; sync
        local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; sync; e=$(date +%s.%N)
        echo "$e - $s" | bc
    done | median
}
t_strata=$(timeit "rm -rf $W/root" "$S" --root "$W/root" pull "$REF")
t_strata1=$(timeit "rm -rf $W/root" "$S" --root "$W/root" pull --jobs 1 "$REF")
t_strata4=$(timeit "rm -rf $W/root" "$S" --root "$W/root" pull --jobs 4 "$REF")
skopeo_umoci() {
    skopeo copy -q --src-tls-verify=false "docker://$REF" "oci:$W/oci:bench" && umoci unpack --image "$W/oci:bench" "$W/bundle"
}
t_skopeo=$(timeit "rm -rf $W/oci $W/bundle" skopeo_umoci)
podman_pull() {
    podman --root "$W/podman" --runroot "$PODMAN_RUN" --storage-driver overlay --events-backend none \
        pull -q --tls-verify=false "$REF"
}
podman_reset() {
    for m in $(grep -o " $W/podman[^ ]*" /proc/self/mountinfo | sort -r); do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$W/podman" "$PODMAN_RUN"
}
t_podman=$(timeit podman_reset podman_pull)
podman_reset
t_ctr=
if command -v containerd >/dev/null && command -v ctr >/dev/null; then
    # A fresh containerd root for every round, as every other line starts from an empty
    # destination: on one root, containerd finds the blobs of earlier rounds in its content
    # store and neither downloads nor writes them.
    ctr_reset() {
        if [ -n "${CTR_PID:-}" ]; then kill "$CTR_PID" 2>/dev/null || true; wait "$CTR_PID" 2>/dev/null || true; fi
        for m in $(grep -o " $W/containerd[^ ]*" /proc/self/mountinfo | sort -r); do umount -l "$m" 2>/dev/null || true; done
        rm -rf "$W/containerd" /run/strata-bench-containerd
        private_containerd "$W/containerd/root" /run/strata-bench-containerd
        CTR_PID=$CTRD_PID
        echo "$CTR_PID" > "$W/containerd.pid"
    }
    ctr_pull() { ctr -a /run/strata-bench-containerd/c.sock -n bench images pull --plain-http "$REF"; }
    t_ctr=$(timeit ctr_reset ctr_pull)
fi

printf '\n%-50s %10s %12s\n' "pull of $mb MB in 4 layers (median of $RUNS)" "seconds" "x/strata"
printf '%-50s %10.3f %12s\n' "strata pull (verify + store + unpack)" "$t_strata" "1.00"
printf '%-50s %10.3f %12.2f\n' "strata pull --jobs 1 (one layer at a time)" "$t_strata1" "$(echo "$t_strata1 / $t_strata" | bc -l)"
printf '%-50s %10.3f %12.2f\n' "strata pull --jobs 4" "$t_strata4" "$(echo "$t_strata4 / $t_strata" | bc -l)"
printf '%-50s %10.3f %12.2f\n' "skopeo copy to oci: + umoci unpack" "$t_skopeo" "$(echo "$t_skopeo / $t_strata" | bc -l)"
printf '%-50s %10.3f %12.2f\n' "podman pull (overlay)" "$t_podman" "$(echo "$t_podman / $t_strata" | bc -l)"
if [ -n "$t_ctr" ]; then
    printf '%-50s %10.3f %12.2f\n' "ctr images pull (overlayfs snapshotter)" "$t_ctr" "$(echo "$t_ctr / $t_strata" | bc -l)"
else
    printf '%-50s %10s\n' "ctr images pull" "n/a (containerd not installed)"
fi
