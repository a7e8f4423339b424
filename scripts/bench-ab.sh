#!/usr/bin/env bash
# Before/after benchmark of two strata builds, interleaved round by round so that both see the
# same machine: import of the benchmark rootfs image (fresh root each time), create + mount +
# umount + rm of a container over a 100-layer image, and commit of a one-file change over the
# rootfs image. Prints the median of each and the ratio B/A.
#
# Usage: sudo scripts/bench-ab.sh A_BIN B_BIN [BENCHDIR] [ROUNDS]   (default /var/tmp/strata-bench, 5)
#   e.g. git worktree add /tmp/before <commit> && (cd /tmp/before && cargo build --release -p strata-cli)
#        scripts/bench-ab.sh /tmp/before/target/release/strata target/release/strata
# BENCH_WORK=/dev/shm/x puts the stores on tmpfs.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" bench-ab
need_root
[ $# -ge 2 ] || { echo "usage: $0 A_BIN B_BIN [BENCHDIR] [ROUNDS]" >&2; exit 2; }
A=$(realpath "$1") B=$(realpath "$2")
BENCH=${3:-/var/tmp/strata-bench}
ROUNDS=${4:-5}
scripts/make-rootfs.sh "$BENCH" >/dev/null
W=${BENCH_WORK:-$BENCH/ab-work}
rm -rf "$W"; mkdir -p "$W"
[ "${KEEP:-0}" = 1 ] || trap 'umount -R "$W"/*/root/containers/*/rootfs 2>/dev/null || true; rm -rf "$W"' EXIT
scripts/make-fixtures.sh "$W/fx" >/dev/null
python3 scripts/fixtures/mklayers.py --layout "$W/fx/oci" --base busybox --tag deep --layers 99 >/dev/null
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
now() { date +%s.%N; }

# Each store is prepared once per binary (what is not timed), then each round times both.
for side in A B; do
    bin=${!side}
    r=$W/$side/root
    mkdir -p "$W/$side"
    "$bin" --root "$r" image import "$W/fx/oci:deep" --name deep >/dev/null
    "$bin" --root "$r" image import "$BENCH/oci:rootfs" --name rootfs >/dev/null
done

one_round() { # side -> "import mount commit" seconds
    local bin=${!1} r=$W/$1/root t0 t1 t2 t3 t4 t5
    rm -rf "$W/$1/imp"; sync
    t0=$(now); "$bin" --root "$W/$1/imp" image import "$BENCH/oci:rootfs" >/dev/null; sync; t1=$(now)
    t2=$(now)
    for i in 1 2 3 4 5; do
        "$bin" --root "$r" container create deep "m$i" >/dev/null
        "$bin" --root "$r" container mount "m$i" >/dev/null
        "$bin" --root "$r" container umount "m$i" >/dev/null
        "$bin" --root "$r" container rm "m$i" >/dev/null
    done
    t3=$(now)
    "$bin" --root "$r" container create rootfs c >/dev/null
    at=$("$bin" --root "$r" container mount c)
    echo changed > "$at/etc/motd"
    "$bin" --root "$r" container umount c >/dev/null
    t4=$(now); "$bin" --root "$r" container commit c committed >/dev/null; t5=$(now)
    "$bin" --root "$r" container rm c >/dev/null
    echo "$(echo "$t1 - $t0" | bc) $(echo "($t3 - $t2) / 5" | bc -l) $(echo "$t5 - $t4" | bc)"
}

: > "$W/A.times"; : > "$W/B.times"
for i in $(seq "$ROUNDS"); do
    one_round A >> "$W/A.times"
    one_round B >> "$W/B.times"
done
col() { awk -v c="$2" '{print $c}' "$W/$1.times" | median; }
printf '%-52s %10s %10s %8s\n' "median of $ROUNDS rounds (seconds)" A B "B/A"
for c in 1 2 3; do
    case $c in
        1) what="image import of the rootfs image" ;;
        2) what="create+mount+umount+rm, 100 layers" ;;
        3) what="commit of a one-file change" ;;
    esac
    a=$(col A "$c") b=$(col B "$c")
    printf '%-52s %10.3f %10.3f %8.2f\n' "$what" "$a" "$b" "$(echo "$b / $a" | bc -l)"
done
echo "A: $A"
echo "B: $B"
