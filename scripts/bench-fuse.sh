#!/usr/bin/env bash
# Benchmark kernel overlayfs vs strata-fuse vs fuse-overlayfs on the same layers, on fixed trees.
# usage: scripts/bench-fuse.sh [WORKDIR]      (needs root)
#   WORKDIR scratch space (default /var/tmp/strata-fuse-bench)
# Env: SIZES   lower tree sizes in entries (default "10000 100000"): the trees of fuse-tree.sh,
#              copies of make-rootfs.sh's debootstrap rootfs cut to exactly that many entries,
#              built once under BENCH (default /var/tmp/strata-bench); never the machine's /usr
#      REPS    rounds (default 5); each line is the median, the backends take turns within a round
#      BIG_MB  size of the big file of the read and copy-up rows (default 1024; the copy-up row
#              uses a file of BIG_MB/4)
# The lower layers are a layer holding the two big files over the tree (whose copies c0, c1, ...
# are then the merged root's other entries). Rows:
#   stat cold / warm / warm again   find over the whole tree: the first walk after a fresh mount
#     with dropped caches, the next one (FUSE marks a directory's atime stale after an uncached
#     readdir, so it costs one GETATTR per directory), the one after that
#   tar                     tar of the whole tree to /dev/null (reads every file)
#   read big cold           dd of the big file after a fresh mount and dropped caches
#   copy-up big/4           append a byte to the smaller big file: a copy-up synced where the
#                           backend syncs (kernel overlayfs and strata-fuse; fuse-overlayfs never)
#   copy-up, no sync        the same on a `volatile` mount (fuse-overlayfs as it is)
#   create 10k              10,000 files made and written by python in a new directory
#   rm -rf lower            rm -rf of c0/usr/share: 5,770 lower entries whatever the tree size
#   create in copy-up       one touch while another process's open is copying up the big file
#                           (started 50 ms before)
# Every line gives the median and the spread (max-min over the rounds, in % of the median): the
# cold rows move with the host's own cache, which no drop inside the VM reaches.
# BACKENDS="kernel strata strata-uring fuse-overlayfs" adds strata-fuse over io_uring (uring=on;
# the plain strata backend is uring=off), turning the fuse module's enable_uring on for the run.
# HALTPOLL_NS=N sets /sys/module/haltpoll/parameters/guest_halt_poll_ns for the run (restored at
# the end): VMs booted with haltpoll.guest_halt_poll_ns=0 pay a halt exit on every cross-CPU
# wake-up, which is most of a FUSE round trip; the kernel's own default is 200000.
set -euo pipefail
BASE="${1:-/var/tmp/strata-fuse-bench}"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" bench-fuse
source scripts/fuse-tree.sh
find_cargo
need_root
command -v fuse-overlayfs >/dev/null || apt-get install -y fuse-overlayfs >/dev/null
cargo build --release -p strata-fuse >&2
STRATA="$PWD/target/release/strata-fuse"
SIZES=${SIZES:-10000 100000}
REPS=${REPS:-5}
BIG_MB=${BIG_MB:-1024}
RMTREE=c0/usr/share
mkdir -p "$BASE/big"
big() { # NAME MB: a file of random data, made once
    local f=$BASE/big/$1
    if [ "$(stat -c %s "$f" 2>/dev/null || echo 0)" != $(($2 * 1024 * 1024)) ]; then
        head -c $(($2 * 1024 * 1024)) /dev/urandom > "$f"
    fi
}
big big "$BIG_MB"
big quarter $((BIG_MB / 4))
MNT="$BASE/mnt"
mkdir -p "$MNT"

ms() { date +%s%N; }
# Dirty data first, then the page cache, dentries and inodes; dropped twice, because the first
# drop can leave pages that were under writeback.
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; sync; echo 3 > /proc/sys/vm/drop_caches; }
do_mount() { # backend lowerdir [extra kernel/strata-fuse option]
    local o="lowerdir=$2,upperdir=$BASE/$1/upper,workdir=$BASE/$1/work" x="${3:+,$3}"
    case $1 in
        kernel) mount -t overlay overlay -o "$o,index=off,redirect_dir=off,metacopy=off$x" "$MNT" ;;
        strata) "$STRATA" -o "$o$x,uring=off" "$MNT" ;;
        strata-uring) "$STRATA" -o "$o$x,uring=on" "$MNT" ;;
        fuse-overlayfs) fuse-overlayfs -o "$o" "$MNT" ;;
    esac
}
do_umount() { umount "$MNT" 2>/dev/null || umount -l "$MNT"; sleep 0.2; }
fresh() { rm -rf "${BASE:?}/$1"; mkdir -p "$BASE/$1/upper" "$BASE/$1/work"; }
HP=/sys/module/haltpoll/parameters/guest_halt_poll_ns
HP_WAS=$(cat "$HP" 2>/dev/null || echo none)
UR=/sys/module/fuse/parameters/enable_uring
UR_WAS=$(cat "$UR" 2>/dev/null || echo none)
restore() {
    umount "$MNT" 2>/dev/null || true
    [ "$HP_WAS" = none ] || echo "$HP_WAS" > "$HP"
    case $UR_WAS in Y) echo 1 > "$UR" ;; N) echo 0 > "$UR" ;; esac
}
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
# median and spread ((max-min)/median, %) of the numbers given
stats() { tr ' ' '\n' | grep -v '^$' | sort -n |
    awk '{a[NR]=$1} END { m = a[int((NR+1)/2)]; printf "%s %s", m, (m > 0 ? int(100 * (a[NR] - a[1]) / m + 0.5) : 0) }'; }
# The tree's copies c0, c1, ... are the merged root's entries besides the two big files.
stat_all() { find "$MNT"/c[0-9]* -printf '%s %i\n' > /dev/null; }
tar_all() { (cd "$MNT" && tar -cf - c[0-9]* | cat > /dev/null); }
seqread() { dd if="$MNT/big" of=/dev/null bs=1M; }
copyup() { printf x >> "$MNT/quarter"; }
create10k() { python3 -c "
import os,sys
d=sys.argv[1]; os.mkdir(d)
for i in range(10000):
    with open(f'{d}/f{i}','w') as f: f.write('x')
" "$MNT/new10k"; }
rmtree() { rm -rf "${MNT:?}/$RMTREE"; }
# A file created while another process's open is copying up the big file (started 50 ms before).
CU_PID=
copyup_bg() { (printf x >> "$MNT/big") & CU_PID=$!; sleep 0.05; }
create_one() { touch "$MNT/created-during-copy-up"; }

read -r -a BACKENDS <<< "${BACKENDS:-kernel strata fuse-overlayfs}"
# strata-uring (FUSE over io_uring) needs the fuse module's enable_uring, on for the run only.
if [[ " ${BACKENDS[*]} " == *" strata-uring "* ]]; then echo 1 > "$UR"; fi
TESTS=("stat cold" "stat warm" "stat warm again" "tar" "read big cold" "copy-up big/4" "copy-up, no sync"
    "create 10k" "rm -rf lower" "create in copy-up")
for n in $SIZES; do
    TREE=$(fuse_tree "$n")
    LOWER="$BASE/big:$TREE"
    echo "== $n entries: lower $LOWER ($TREE); rm -rf tree: $RMTREE" >&2
    for rep in $(seq "$REPS"); do
        for be in "${BACKENDS[@]}"; do
            echo "== $be, $n entries (round $rep of $REPS)" >&2
            fresh "$be"
            drop; do_mount "$be" "$LOWER"
            timeit "stat cold,$n" "$be" stat_all
            timeit "stat warm,$n" "$be" stat_all
            timeit "stat warm again,$n" "$be" stat_all
            timeit "tar,$n" "$be" tar_all
            do_umount; drop; do_mount "$be" "$LOWER"
            timeit "read big cold,$n" "$be" seqread
            sync   # the synced copy-up's fsync should flush its own data, not what came before
            timeit "copy-up big/4,$n" "$be" copyup
            timeit "create 10k,$n" "$be" create10k
            timeit "rm -rf lower,$n" "$be" rmtree
            copyup_bg
            timeit "create in copy-up,$n" "$be" create_one
            wait "$CU_PID"
            do_umount
            fresh "$be"
            drop; do_mount "$be" "$LOWER" "$([ "$be" = fuse-overlayfs ] || echo volatile)"
            sync
            timeit "copy-up, no sync,$n" "$be" copyup
            do_umount
            rm -rf "${BASE:?}/$be"
        done
    done
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
echo "median of $REPS rounds, ms (spread: max-min in % of the median); big file $BIG_MB MiB; $(uname -r)"
printf '\n| %-18s | %7s | %14s | %14s | %14s | %13s | %21s |\n' test entries "kernel ms" "strata ms" "fuse-ovl ms" \
    "strata/kernel" "strata/fuse-overlayfs"
printf '|%s|%s|%s|%s|%s|%s|%s|\n' -------------------- ---------: ---------------: ---------------: \
    ---------------: --------------: ----------------------:
for n in $SIZES; do
    for t in "${TESTS[@]}"; do
        read -r k ks <<< "$(echo "${RES["$t,$n,kernel"]}" | stats)"
        read -r s ss <<< "$(echo "${RES["$t,$n,strata"]}" | stats)"
        read -r f fs <<< "$(echo "${RES["$t,$n,fuse-overlayfs"]}" | stats)"
        printf '| %-18s | %7s | %14s | %14s | %14s | %13s | %21s |\n' "$t" "$n" "$k ±$ks%" "$s ±$ss%" \
            "$f ±$fs%" "$(ratio "$s" "$k")" "$(ratio "$s" "$f")"
    done
done
if [[ " ${BACKENDS[*]} " == *" strata-uring "* ]]; then
    printf '\nstrata-fuse transports: /dev/fuse reads (uring=off) vs FUSE over io_uring (uring=on)\n'
    printf '\n| %-18s | %7s | %14s | %14s | %12s | %13s |\n' test entries "/dev/fuse ms" "io_uring ms" \
        "uring/devfuse" "uring/kernel"
    printf '|%s|%s|%s|%s|%s|%s|\n' -------------------- ---------: ---------------: ---------------: \
        -------------: --------------:
    for n in $SIZES; do
        for t in "${TESTS[@]}"; do
            read -r k _ <<< "$(echo "${RES["$t,$n,kernel"]:-}" | stats)"
            read -r s ss <<< "$(echo "${RES["$t,$n,strata"]:-}" | stats)"
            read -r u us <<< "$(echo "${RES["$t,$n,strata-uring"]}" | stats)"
            printf '| %-18s | %7s | %14s | %14s | %12s | %13s |\n' "$t" "$n" "$s ±$ss%" "$u ±$us%" \
                "$(ratio "$u" "$s")" "$(ratio "$u" "$k")"
        done
    done
fi
