#!/usr/bin/env bash
# Mount benchmark: per-operation milliseconds of strata container create / mount / umount / rm for
# images of 1, 10, 100 and 500 layers, side by side with a bare `mount -t overlay` + `umount` of the
# same layer directories (what a script would do by hand), printing the ratio.
#
# Usage: sudo scripts/bench-mount.sh [ITERATIONS]   (default 50)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" bench-mount
find_cargo
N=${1:-50}
scripts/setup.sh
cargo build --release -p strata-cli --quiet
S=$PWD/target/release/strata
W=$(mktemp -d /var/tmp/strata-bench-mount.XXXXXX)
trap 'umount -R "$W/manual" 2>/dev/null || true; rm -rf "$W"' EXIT
scripts/make-fixtures.sh "$W/fx" >/dev/null
L=$W/fx/oci
for n in 9 99 499; do   # busybox base + n = 10, 100, 500 layers
    python3 scripts/fixtures/mklayers.py --layout "$L" --base busybox --tag "bench-$n" --layers "$n" >/dev/null
done
export STRATA_ROOT=$W/root
$S image import "$L:busybox" --name l1 >/dev/null
for n in 9 99 499; do $S image import "$L:bench-$n" --name "l$((n + 1))" >/dev/null; done
ms() { echo "($2 - $1) * 1000 / $N" | bc -l; }
now() { date +%s.%N; }
printf '%-7s %10s %10s %10s %10s %10s | %16s %8s\n' layers create mount umount rm total "mount -t overlay" ratio
for layers in 1 10 100 500; do
    img=l$layers
    t0=$(now); for i in $(seq "$N"); do $S container create "$img" "c$i" >/dev/null; done
    t1=$(now); for i in $(seq "$N"); do $S container mount "c$i" >/dev/null; done
    t2=$(now); for i in $(seq "$N"); do $S container umount "c$i"; done
    t3=$(now); for i in $(seq "$N"); do $S container rm "c$i" >/dev/null; done
    t4=$(now)
    # The same stack mounted by hand: lowerdir list from strata's own description.
    $S container create "$img" manual >/dev/null
    opts=$($S container mounts manual --json | python3 -c 'import json,sys; print(",".join(json.load(sys.stdin)[0]["options"]))')
    mkdir -p "$W/manual"
    total=$(echo "($t4 - $t0) * 1000 / $N" | bc -l)
    row=$(printf '%-7s %10.2f %10.2f %10.2f %10.2f %10.2f' "$layers" \
        "$(ms "$t0" "$t1")" "$(ms "$t1" "$t2")" "$(ms "$t2" "$t3")" "$(ms "$t3" "$t4")" "$total")
    # mount(8) passes one option string, limited to a page: deep stacks do not fit.
    if mount -t overlay overlay -o "$opts" "$W/manual" 2>/dev/null; then
        umount "$W/manual"
        work=$($S container inspect manual | python3 -c 'import json,sys; print(json.load(sys.stdin)["work"])')
        m0=$(now)
        for i in $(seq "$N"); do
            rm -rf "$work/work"
            mount -t overlay overlay -o "$opts" "$W/manual"; umount "$W/manual"
        done
        m1=$(now)
        manual=$(ms "$m0" "$m1")
        mnt_umnt=$(echo "($t3 - $t1) * 1000 / $N" | bc -l)
        printf '%s | %16.2f %8.2f\n' "$row" "$manual" "$(echo "$mnt_umnt / $manual" | bc -l)"
    else
        printf '%s | %16s %8s\n' "$row" "fails (${#opts} B)" "-"
    fi
    $S container rm manual >/dev/null
done
echo "(ms per operation, mean of $N; ratio = strata mount+umount / mount(8)+umount(8) of the same stack)"
