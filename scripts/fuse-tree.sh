# Sourced by bench-fuse.sh and fuse-requests.sh: the fixed lower trees they measure on.
#   fuse_tree N [BENCH]  prints the path of a tree of exactly N entries (below its root), built
#                        once and cached as BENCH/fuse-tree-N (BENCH default /var/tmp/strata-bench)
# The tree is copies c0, c1, ... of the debootstrap rootfs of make-rootfs.sh (9,377 entries,
# 202 MiB; made once, needs debootstrap), each copy's directory counting as one entry; the last
# copy holds the first entries of the rootfs in `find` order (parents before children), so the
# same N always gives the same tree, whatever else the machine has installed.

fuse_tree() { # N [BENCH]
    local n=$1 bench=${2:-/var/tmp/strata-bench}
    local tree=$bench/fuse-tree-$n
    if [ -f "$tree.done" ] && [ -d "$tree" ]; then
        echo "$tree"
        return 0
    fi
    scripts/make-rootfs.sh "$bench" >&2
    local src=$bench/rootfs list
    list=$(mktemp)
    # Entries of one copy, "." excluded; find's order puts every directory before its children.
    (cd "$src" && find . -xdev -mindepth 1 | LC_ALL=C sort) > "$list"
    local per=$(( $(wc -l < "$list") + 1 )) left=$n i=0
    echo "fuse-tree: building $tree ($n entries, copies of $per)" >&2
    rm -rf "$tree" "$tree.done"
    mkdir -p "$tree"
    while [ "$left" -gt 0 ]; do
        mkdir "$tree/c$i"
        left=$((left - 1))
        local take=$((left < per - 1 ? left : per - 1))
        # --no-recursion: exactly the listed entries (a sorted list keeps parents first).
        head -n "$take" "$list" | (cd "$src" && tar --no-recursion -T - -cf -) |
            tar -xpf - -C "$tree/c$i"
        left=$((left - take))
        i=$((i + 1))
    done
    rm -f "$list"
    local got
    got=$(find "$tree" -mindepth 1 | wc -l)
    [ "$got" = "$n" ] || { echo "fuse-tree: $tree has $got entries, not $n" >&2; return 1; }
    echo "$n entries in $i copies of $src" > "$tree.done"
    echo "$tree"
}
