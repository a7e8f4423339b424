#!/usr/bin/env bash
# strata build vs buildah bud --layers vs podman build, in one run: median of RUNS (default 3)
# wall times, each build in a fresh store (the base image loaded beforehand, not timed), then the
# same build again in that store (fully cached). Two Containerfiles over the debootstrap base
# (make-rootfs.sh's image $BENCH/oci:rootfs): 20 small RUN and COPY steps, and 3 steps that
# install a large tree (a copy of /usr/lib). Prints each median and strata's ratios.
# usage: scripts/bench-build.sh [BENCHDIR] [RUNS]     (record timings only when `uptime` < 0.5)
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh" build 3 "$@"
BASE="oci:$BENCH/oci:rootfs"
uptime >&2

# The two contexts.
small=$W/ctx-small large=$W/ctx-large
mkdir -p "$small" "$large"
{
    echo "FROM base"
    for i in $(seq 1 10); do
        echo "RUN echo step $i > /run-$i.txt"
        echo "COPY file-$i.txt /copied/"
        echo "step $i" >"$small/file-$i.txt"
    done
} >"$small/Containerfile"
printf 'FROM base\nRUN cp -a /usr/lib /opt/lib\nENV LARGE=1\n' >"$large/Containerfile"

storage=(--storage-driver overlay)
# containers/storage wants a run root of at most 50 characters: one short one per store, in /run.
runroot() { local h; h=$(echo "$1" | sha256sum | cut -c1-12); mkdir -p "/run/sb-$h"; echo "/run/sb-$h"; }
b_run() { buildah --root "$1/root" --runroot "$(runroot "$1")" "${storage[@]}" "${@:2}"; }
p_run() { podman --root "$1/root" --runroot "$(runroot "$1")" "${storage[@]}" --cgroup-manager cgroupfs --events-backend none "${@:2}"; }

# Loads the base into a fresh store for TOOL in DIR.
load() { # TOOL DIR
    case $1 in
        strata) "$S" --root "$2" image import "$BASE" --name base >/dev/null ;;
        buildah) b_run "$2" pull -q "$BASE" >/dev/null && b_run "$2" tag "$(b_run "$2" images -q | head -1)" base ;;
        podman) p_run "$2" pull -q "$BASE" >/dev/null && p_run "$2" tag "$(p_run "$2" images -q | head -1)" base ;;
    esac
}
build() { # TOOL DIR CTX
    case $1 in
        strata) "$S" --root "$2" build -q -t out "$3" >/dev/null ;;
        buildah) b_run "$2" bud --layers -q -t out "$3" >/dev/null ;;
        podman) p_run "$2" build --layers -q -t out "$3" >/dev/null ;;
    esac
}
clean() { # DIR
    for m in $(awk -v d="$1" '$2 ~ "^"d {print $2}' /proc/mounts | sort -r); do umount -l "$m" || true; done
    rm -rf "$1" "$(runroot "$1")"
}
now() { date +%s.%N; }

declare -A T
for ctx in small large; do
    for tool in strata buildah podman; do
        fresh=() cached=()
        for r in $(seq 1 "$RUNS"); do
            d=$W/$tool-$ctx-$r
            mkdir -p "$d"
            load "$tool" "$d"
            t0=$(now); build "$tool" "$d" "$W/ctx-$ctx"; t1=$(now)
            build "$tool" "$d" "$W/ctx-$ctx"; t2=$(now)
            fresh+=("$(echo "$t1 - $t0" | bc)") cached+=("$(echo "$t2 - $t1" | bc)")
            clean "$d"
        done
        T[$tool-$ctx-fresh]=$(printf '%s\n' "${fresh[@]}" | median)
        T[$tool-$ctx-cached]=$(printf '%s\n' "${cached[@]}" | median)
        printf '%-8s %-6s fresh %7.2f s  cached %7.2f s\n' "$tool" "$ctx" \
            "${T[$tool-$ctx-fresh]}" "${T[$tool-$ctx-cached]}"
    done
done
echo "ratios (other / strata; above 1 means strata is faster):"
for ctx in small large; do
    for kind in fresh cached; do
        for tool in buildah podman; do
            printf '  %-6s %-6s %-7s %6.2fx\n' "$ctx" "$kind" "$tool" \
                "$(echo "${T[$tool-$ctx-$kind]} / ${T[strata-$ctx-$kind]}" | bc -l)"
        done
    done
done
