#!/usr/bin/env bash
# Run the pjdfstest POSIX suite (crate pjdfstest 0.2.2) on kernel overlayfs and on strata-fuse over
# identical 2-layer stacks, and print the results side by side.
# usage: scripts/posix-fuse.sh [TEST_PATTERN...]   (needs root; patterns filter test names)
# Exit status: 1 when a test passes on the kernel but fails on strata-fuse (a regression).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" posix-fuse
find_cargo
[ "$(id -u)" = 0 ] || { echo "posix-fuse.sh needs root" >&2; exit 1; }
PJDFSTEST="$PWD/target/tools/bin/pjdfstest"
# setup.sh installs it (cargo install into target/tools, with libacl1-dev to link it).
[ -x "$PJDFSTEST" ] || scripts/setup.sh
cargo build -q -p strata-fuse
STRATA="$PWD/target/debug/strata-fuse"

BASE=$(mktemp -d /tmp/posix-fuse.XXXXXX)
# The suite switches to other users (nobody, daemon), who must reach the mounts.
chmod 755 "$BASE"
cleanup() {
    for k in kernel fuse; do
        mountpoint -q "$BASE/$k/mnt" 2>/dev/null && { umount "$BASE/$k/mnt" || umount -l "$BASE/$k/mnt"; }
    done
    rm -rf "$BASE"
}
trap cleanup EXIT

cp fuse/tests/pjdfstest.toml "$BASE/pjdfstest.toml"

for k in kernel fuse; do
    d="$BASE/$k"
    mkdir -p "$d"/{l1,l2,upper,work,mnt}
    # l2 (bottom): t/, t/a, b;  l1 (top): t/, t/c.  The suite runs inside the merged dir t.
    mkdir "$d/l2/t" "$d/l1/t"
    echo a > "$d/l2/t/a"
    echo b > "$d/l2/b"
    echo c > "$d/l1/t/c"
    chmod 755 "$d"/{l1,l2,upper,mnt} "$d/l1/t" "$d/l2/t"
    o="lowerdir=$d/l1:$d/l2,upperdir=$d/upper,workdir=$d/work"
    case $k in
        kernel) mount -t overlay overlay -o "$o,index=off,redirect_dir=nofollow,metacopy=off" "$d/mnt" ;;
        fuse) "$STRATA" -o "$o" "$d/mnt" ;;
    esac
done

declare -A SECS
for k in kernel fuse; do
    s=$(date +%s%N)
    (cd "$BASE/$k/mnt/t" && NO_COLOR=1 "$PJDFSTEST" -c "$BASE/pjdfstest.toml" -p "$BASE/$k/mnt/t" "$@") \
        > "$BASE/$k.out" 2>&1 || true
    SECS[$k]=$(( ($(date +%s%N) - s) / 1000000 ))
done

# "NAME <spaces> STATUS" lines -> "NAME STATUS" (STATUS: ok, FAILED, skipped, ...); messages of a
# failing test follow it on lines starting with a tab.
results() { sed 's/\x1b\[[0-9;]*m//g' "$BASE/$1.out" | awk '/^[a-z_0-9]+::/ {
    n = $1; $1 = ""; sub(/^ +/, ""); print n "\t" $0 }' | sort; }
results kernel > "$BASE/kernel.res"
results fuse > "$BASE/fuse.res"
join -t $'\t' -a1 -a2 -e missing -o 0,1.2,2.2 "$BASE/kernel.res" "$BASE/fuse.res" > "$BASE/both.res"

printf '%-64s %-12s %s\n' TEST kernel strata-fuse
while IFS=$'\t' read -r name kst fst; do
    mark=""
    if [ "$fst" != ok ] && [ "$fst" != skipped ]; then
        if [ "$kst" = ok ]; then mark="  <-- REGRESSION"; else mark="  (kernel too)"; fi
    fi
    printf '%-64s %-12s %s%s\n' "$name" "$kst" "$fst" "$mark"
done < "$BASE/both.res"

fail_msgs() { # backend test: the messages printed under a failing test
    sed 's/\x1b\[[0-9;]*m//g' "$BASE/$1.out" | awk -v t="$2" '
        /^[a-z_0-9]+::/ { on = ($1 == t); next } on && /^\t/ { print "      " $0 }' | head -5
}
regressions=$(awk -F'\t' '$2 == "ok" && $3 != "ok" && $3 != "skipped" { print $1 }' "$BASE/both.res")
kernel_too=$(awk -F'\t' '$2 != "ok" && $2 != "skipped" && $3 != "ok" && $3 != "skipped" { print $1 }' \
    "$BASE/both.res")
echo
if [ -n "$kernel_too" ]; then
    echo "failing on strata-fuse, kernel too:"
    for t in $kernel_too; do echo "  $t"; fail_msgs fuse "$t"; done
fi
if [ -n "$regressions" ]; then
    echo "REGRESSIONS (pass on kernel overlayfs, fail on strata-fuse):"
    for t in $regressions; do echo "  $t"; fail_msgs fuse "$t"; done
fi
for k in kernel fuse; do
    echo "$k: $(sed 's/\x1b\[[0-9;]*m//g' "$BASE/$k.out" | grep '^Summary' || echo 'no summary (crashed?)') (${SECS[$k]} ms)"
done
count() { awk -F'\t' -v s="$2" '($2 == "ok") == (s == "ok") && $2 != "skipped"' "$BASE/$1.res" | wc -l; }
echo "posix: $(count fuse ok) passed, $(count fuse fail) failed"
[ -z "$regressions" ]
