#!/usr/bin/env bash
# Requests strata-fuse receives per operation: a histogram by opcode (`strata-fuse --stats`,
# dumped before and after each operation), on the fixed tree of fuse-tree.sh. Counts, not times:
# they do not depend on the machine's load, so they compare across commits on a busy machine.
# usage: scripts/fuse-requests.sh [ENTRIES] [WORKDIR]    (needs root)
#   ENTRIES  size of the lower tree (default 10000); WORKDIR scratch (default /var/tmp/strata-fuse-req)
# Each operation runs on a fresh mount (empty upper dir) after its set-up, which is not counted:
#   stat cold / stat warm   find over the whole tree, the first and the second time
#   create x100             100 files made and written by python (open, write, close) in a
#                           directory already listed and holding one file made the same way
#   mkdir x100              100 directories in that directory
#   rm -rf lower            rm -rf of c0/usr/share (5,770 lower entries), cold
#   append to lower file    printf x >> c0/etc/debian_version (stat'ed first): copy-up, write
#   truncate lower file     echo x > c0/etc/hostname (stat'ed first)
#   chmod lower file        chmod 600 c0/etc/shells (stat'ed first)
#   stat missing x100 x2    stat of 100 names that do not exist, twice (a PATH search, an import
#                           path probe)
#   write 100 blocks        dd of 100 4 KiB blocks into a new file
set -euo pipefail
N=${1:-10000}
BASE=${2:-/var/tmp/strata-fuse-req}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" fuse-requests
source scripts/fuse-tree.sh
find_cargo
need_root
# STRATA=BINARY measures another build (an older commit's, say) instead of this checkout's.
if [ -z "${STRATA:-}" ]; then
    cargo build -q -p strata-fuse
    STRATA=$PWD/target/debug/strata-fuse
fi
TREE=$(fuse_tree "$N")
MNT=$BASE/mnt
PID=
cleanup() {
    mountpoint -q "$MNT" 2>/dev/null && { umount "$MNT" || umount -l "$MNT"; }
    [ -z "$PID" ] || wait "$PID" 2>/dev/null || true
    rm -rf "${BASE:?}"
}
trap cleanup EXIT

start() { # a fresh mount of $TREE with an empty upper dir, its daemon's pid in PID
    rm -rf "${BASE:?}"
    mkdir -p "$BASE/upper" "$BASE/work" "$MNT"
    "$STRATA" -f --stats "$BASE/stats" -o "lowerdir=$TREE,upperdir=$BASE/upper,workdir=$BASE/work" "$MNT" &
    PID=$!
    local i
    for i in $(seq 200); do mountpoint -q "$MNT" && return 0; sleep 0.05; done
    echo "fuse-requests: strata-fuse did not mount" >&2
    exit 1
}
stop() { umount "$MNT"; wait "$PID"; PID=; }
snap() { # FILE: the counts so far
    rm -f "$BASE/stats"
    kill -USR1 "$PID"
    local i
    for i in $(seq 200); do [ -s "$BASE/stats" ] && break; sleep 0.01; done
    cp "$BASE/stats" "$1"
}
declare -a OPS=()
measure() { # NAME SETUP-FN OP-FN
    start
    "$2"
    sync
    snap "$BASE/before"
    "$3"
    sleep 0.2   # the kernel sends RELEASE (and FORGETs) after close returns
    snap "$BASE/after"
    stop
    awk -v op="$1" 'NR == FNR { b[$1] = $2; next } { d = $2 - b[$1]; if (d) print op "\t" $1 "\t" d }' \
        "$BASE/before" "$BASE/after" >> "$BASE.rows"
    OPS+=("$1")
}

none() { :; }
find_all() { find "$MNT" -printf '%s %i\n' > /dev/null; }
mkparent() { mkdir "$MNT/d"; python3 -c "open('$MNT/d/w', 'w').write('x')"; ls "$MNT/d" > /dev/null; }
create100() { python3 -c "
for i in range(100):
    with open(f'$MNT/d/f{i}', 'w') as f: f.write('x')"; }
mkdir100() { python3 -c "
import os
for i in range(100): os.mkdir(f'$MNT/d/m{i}')"; }
rmtree() { rm -rf "$MNT/c0/usr/share"; }
stat_files() { stat "$MNT/c0/etc/debian_version" "$MNT/c0/etc/hostname" "$MNT/c0/etc/shells" > /dev/null; }
append() { printf x >> "$MNT/c0/etc/debian_version"; }
trunc() { echo x > "$MNT/c0/etc/hostname"; }
chmod_lower() { chmod 600 "$MNT/c0/etc/shells"; }
stat_missing() { python3 -c "
import os
for r in range(2):
    for i in range(100):
        try: os.stat(f'$MNT/c0/etc/missing{i}')
        except FileNotFoundError: pass"; }
write_blocks() { dd if=/dev/zero of="$MNT/d/blocks" bs=4k count=100 status=none; }

rm -f "$BASE.rows"
measure "stat cold" none find_all
measure "stat warm" find_all find_all
measure "create x100" mkparent create100
measure "mkdir x100" mkparent mkdir100
measure "rm -rf lower" none rmtree
measure "append to lower file" stat_files append
measure "truncate lower file" stat_files trunc
measure "chmod lower file" stat_files chmod_lower
measure "stat missing x100 x2" stat_files stat_missing
measure "write 100 blocks" mkparent write_blocks

echo "strata-fuse requests per operation; lower tree: $TREE ($N entries); $(uname -r)"
printf '| %-20s |' opcode
for o in "${OPS[@]}"; do printf ' %s |' "$o"; done
printf '\n|---|'
for o in "${OPS[@]}"; do printf -- '---:|'; done
echo
for code in $(cut -f2 "$BASE.rows" | awk '!seen[$0]++'); do
    printf '| %-20s |' "$code"
    for o in "${OPS[@]}"; do
        n=$(awk -F'\t' -v o="$o" -v c="$code" '$1 == o && $2 == c { print $3 }' "$BASE.rows")
        printf ' %s |' "${n:--}"
    done
    echo
done
printf '| %-20s |' total
for o in "${OPS[@]}"; do
    awk -F'\t' -v o="$o" '$1 == o && $2 != "LOOKUP(negative)" && $2 != "(io_uring)" { s += $3 } END { printf " %d |", s }' "$BASE.rows"
done
echo
rm -f "$BASE.rows"
