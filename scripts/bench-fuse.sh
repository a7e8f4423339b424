#!/usr/bin/env bash
# Benchmark kernel overlayfs vs strata-fuse vs fuse-overlayfs on the same layers.
# usage: scripts/bench-fuse.sh [ROOTFS] [SUBTREE] [WORKDIR]
#   ROOTFS   lower layer (default /usr); SUBTREE inside it to stat/tar (default share, 5,000+ entries)
#   WORKDIR  scratch space (default /var/tmp/strata-fuse-bench)
# A second, top lower layer holds a 1 GiB and a 256 MiB file. Needs root. Each line is the median
# of REPS (default 3) rounds; the backends take turns within a round.
#   "stat warm" is the first walk after the cold one, "stat warm again" the next one: FUSE marks
#   a directory's atime stale after an uncached readdir, so the first warm walk costs one GETATTR
#   round trip per directory.
#   "create in copy-up": one file created while another process copies up the 1 GiB file.
#   "copy-up 256MiB" syncs the copy before it becomes visible where the backend does (kernel
#   overlayfs and strata-fuse do; fuse-overlayfs never does); "copy-up, no sync" mounts kernel
#   overlayfs and strata-fuse with `volatile` (fuse-overlayfs as it is).
# HALTPOLL_NS=N sets /sys/module/haltpoll/parameters/guest_halt_poll_ns for the run (restored at
# the end): VMs booted with haltpoll.guest_halt_poll_ns=0 pay a halt exit on every cross-CPU
# wake-up, which is most of a FUSE round trip; the kernel's own default is 200000.
set -euo pipefail
ROOTFS="${1:-/usr}"
SUB="${2:-share}"
BASE="${3:-/var/tmp/strata-fuse-bench}"
RMTREE="${RMTREE:-$SUB/doc}"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" bench-fuse
find_cargo
[ "$(id -u)" = 0 ] || { echo "bench-fuse.sh needs root" >&2; exit 1; }
command -v fuse-overlayfs >/dev/null || apt-get install -y fuse-overlayfs >/dev/null
cargo build --release -p strata-fuse >&2
STRATA="$PWD/target/release/strata-fuse"
mkdir -p "$BASE/big"
[ -s "$BASE/big/big1g" ] || head -c $((1024 * 1024 * 1024)) /dev/urandom > "$BASE/big/big1g"
[ -s "$BASE/big/big256" ] || head -c $((256 * 1024 * 1024)) /dev/urandom > "$BASE/big/big256"
LOWER="$BASE/big:$ROOTFS"
MNT="$BASE/mnt"
mkdir -p "$MNT"
echo "lower: $LOWER; tree: $SUB ($(find "$ROOTFS/$SUB" | wc -l) entries); rm -rf tree: $RMTREE" >&2

ms() { date +%s%N; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
do_mount() { # backend [extra kernel/strata-fuse option]
    local o="lowerdir=$LOWER,upperdir=$BASE/$1/upper,workdir=$BASE/$1/work" x="${2:+,$2}"
    case $1 in
        kernel) mount -t overlay overlay -o "$o,index=off,redirect_dir=off,metacopy=off$x" "$MNT" ;;
        strata) "$STRATA" -o "$o$x" "$MNT" ;;
        fuse-overlayfs) fuse-overlayfs -o "$o" "$MNT" ;;
    esac
}
do_umount() { umount "$MNT" 2>/dev/null || umount -l "$MNT"; sleep 0.2; }
HP=/sys/module/haltpoll/parameters/guest_halt_poll_ns
HP_WAS=$(cat "$HP" 2>/dev/null || echo none)
restore() { umount "$MNT" 2>/dev/null || true; [ "$HP_WAS" = none ] || echo "$HP_WAS" > "$HP"; }
trap restore EXIT
if [ -n "${HALTPOLL_NS:-}" ] && [ -w "$HP" ]; then echo "$HALTPOLL_NS" > "$HP"; fi
echo "guest_halt_poll_ns: $(cat "$HP" 2>/dev/null || echo n/a) (was $HP_WAS); $(nproc) CPUs; $(uname -r)" >&2
declare -A RES
timeit() { # name backend cmd...
    local name=$1 be=$2; shift 2
    local s e
    s=$(ms); "$@" > /dev/null 2>&1; e=$(ms)
    local t=$(( (e - s) / 1000000 ))
    RES["$name,$be"]="${RES["$name,$be"]:-} $t"
    echo "  $be $name: $t ms" >&2
}
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
REPS=${REPS:-3}
stat_all() { find "$MNT/$SUB" -printf '%s %i\n' > /dev/null; }
tar_all() { (cd "$MNT/$SUB" && tar -cf - . | cat > /dev/null); }
seqread() { dd if="$MNT/big1g" of=/dev/null bs=1M; }
copyup() { printf x >> "$MNT/big256"; }
create10k() { python3 -c "
import os,sys
d=sys.argv[1]; os.mkdir(d)
for i in range(10000):
    with open(f'{d}/f{i}','w') as f: f.write('x')
" "$MNT/new10k"; }
rmtree() { rm -rf "${MNT:?}/$RMTREE"; }
# A file created while another process's open is copying up the 1 GiB file (started 50 ms before).
CU_PID=
copyup_bg() { (printf x >> "$MNT/big1g") & CU_PID=$!; sleep 0.05; }
create_one() { touch "$MNT/created-during-copy-up"; }

BACKENDS=(kernel strata fuse-overlayfs)
TESTS=("stat cold" "stat warm" "stat warm again" "tar" "read 1GiB cold" "copy-up 256MiB" "copy-up, no sync"
    "create 10k" "rm -rf lower" "create in copy-up")
for rep in $(seq "$REPS"); do
for be in "${BACKENDS[@]}"; do
    echo "== $be (run $rep of $REPS)" >&2
    rm -rf "${BASE:?}/$be"; mkdir -p "$BASE/$be/upper" "$BASE/$be/work"
    drop; do_mount "$be"
    timeit "stat cold" "$be" stat_all
    timeit "stat warm" "$be" stat_all
    timeit "stat warm again" "$be" stat_all
    timeit "tar" "$be" tar_all
    do_umount; drop; do_mount "$be"
    timeit "read 1GiB cold" "$be" seqread
    sync   # the synced copy-up's fsync should flush its own data, not what came before
    timeit "copy-up 256MiB" "$be" copyup
    timeit "create 10k" "$be" create10k
    timeit "rm -rf lower" "$be" rmtree
    copyup_bg
    timeit "create in copy-up" "$be" create_one
    wait "$CU_PID"
    do_umount
    rm -rf "${BASE:?}/$be"; mkdir -p "$BASE/$be/upper" "$BASE/$be/work"
    drop; do_mount "$be" "$([ "$be" = fuse-overlayfs ] || echo volatile)"
    sync
    timeit "copy-up, no sync" "$be" copyup
    do_umount
    rm -rf "${BASE:?}/$be"
done
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
printf '\n| %-16s | %10s | %10s | %14s | %13s | %21s |\n' test "kernel ms" "strata ms" "fuse-ovl ms" "strata/kernel" "strata/fuse-overlayfs"
printf '|%s|%s|%s|%s|%s|%s|\n' ------------------ ------------ ------------ ---------------- --------------- -----------------------
for t in "${TESTS[@]}"; do
    k=$(echo "${RES["$t,kernel"]}" | median); s=$(echo "${RES["$t,strata"]}" | median)
    f=$(echo "${RES["$t,fuse-overlayfs"]}" | median)
    printf '| %-16s | %10s | %10s | %14s | %13s | %21s |\n' "$t" "$k" "$s" "$f" "$(ratio "$s" "$k")" "$(ratio "$s" "$f")"
done
