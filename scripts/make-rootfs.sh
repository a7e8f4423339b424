#!/usr/bin/env bash
# Build a realistic Debian rootfs for benchmarks and pack it as a one-layer OCI image.
#
# Usage: scripts/make-rootfs.sh OUTDIR
#
#   OUTDIR/rootfs          debootstrap --variant=minbase bookworm (cached: kept across runs)
#   OUTDIR/oci:rootfs      single-layer OCI image of it (umoci)
#   OUTDIR/rootfs.tar.gz   the layer blob of oci:rootfs, byte for byte
#
# Env: MIRROR (default http://deb.debian.org/debian), SUITE (bookworm),
#      INCLUDE (extra packages, comma-separated; default below), FORCE=1 to repack.
# Use a different OUTDIR from make-fixtures.sh (both own OUTDIR/oci). Needs root.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
OUT=$(mkdir -p "$1" && cd "$1" && pwd)
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SUITE=${SUITE:-bookworm}
INCLUDE=${INCLUDE-perl,python3-minimal}   # minbase alone is ~126 MiB once .debs and apt lists are gone
EPOCH=1700000000
CREATED=$(date -u -d "@$EPOCH" +%Y-%m-%dT%H:%M:%SZ)
for tool in debootstrap umoci; do
    command -v "$tool" >/dev/null || { echo "$0: $tool not found" >&2; exit 1; }
done
[[ $(id -u) -eq 0 ]] || { echo "$0: must run as root" >&2; exit 1; }

log() { printf '== %s\n' "$*" >&2; }
ROOTFS=$OUT/rootfs
DONE=$OUT/rootfs.done   # written only after a complete debootstrap

if [[ -f $DONE && -d $ROOTFS ]]; then
    log "rootfs cached: $ROOTFS ($(cat "$DONE"))"
else
    rm -rf "$ROOTFS" "$ROOTFS.tmp" "$DONE"
    log "debootstrap $SUITE minbase${INCLUDE:+ +$INCLUDE} from $MIRROR"
    start=$SECONDS
    debootstrap --variant=minbase ${INCLUDE:+--include="$INCLUDE"} "$SUITE" "$ROOTFS.tmp" "$MIRROR" >"$OUT/debootstrap.log" 2>&1 ||
        { tail -20 "$OUT/debootstrap.log" >&2; exit 1; }
    # downloaded .debs and apt lists are not part of a realistic image
    rm -rf "$ROOTFS.tmp"/var/cache/apt/archives/*.deb "$ROOTFS.tmp"/var/lib/apt/lists/*_dists_*
    mv "$ROOTFS.tmp" "$ROOTFS"
    echo "$SUITE minbase${INCLUDE:+ +$INCLUDE}, debootstrap $((SECONDS - start)) s" >"$DONE"
    rm -f "$OUT/rootfs.tar.gz"   # force a repack of the new tree
fi
size=$(du -sb "$ROOTFS" | cut -f1)
files=$(find "$ROOTFS" -xdev | wc -l)
log "rootfs: $((size / 1024 / 1024)) MiB, $files entries"

if [[ ${FORCE:-0} != 1 && -f $OUT/rootfs.tar.gz && -f $OUT/oci/index.json ]] &&
    umoci stat --image "$OUT/oci:rootfs" >/dev/null 2>&1; then
    log "image cached: $OUT/oci:rootfs (FORCE=1 to repack)"
    exit 0
fi

log "packing with umoci"
start=$SECONDS
BUILD=$OUT/.build
rm -rf "$BUILD"
mkdir -p "$BUILD"
trap 'rm -rf "$BUILD"' EXIT
L=$BUILD/oci
umoci init --layout "$L"
umoci new --image "$L:rootfs"
umoci config --image "$L:rootfs" --no-history --created "$CREATED" --architecture amd64 --os linux \
    --config.cmd /bin/bash --config.workingdir / \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
umoci unpack --image "$L:rootfs" "$BUILD/bundle" >/dev/null
rmdir "$BUILD/bundle/rootfs"
# hardlinked copy: no data is copied and umoci only reads the tree. Each inode still appears
# once per real hardlink group, so the layer's hardlinks are exactly debootstrap's.
cp -a --link "$ROOTFS" "$BUILD/bundle/rootfs"
touch -h -d "@$EPOCH" "$BUILD/bundle/rootfs"
umoci repack --image "$L:rootfs" --history.created "$CREATED" \
    --history.created_by "make-rootfs.sh: debootstrap --variant=minbase $SUITE${INCLUDE:+ --include=$INCLUDE}" \
    "$BUILD/bundle"
umoci gc --layout "$L"
layer=$(python3 - "$L" <<'PY'
import json, sys
root = sys.argv[1]
idx = json.load(open(f"{root}/index.json"))
m = [d for d in idx["manifests"] if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == "rootfs"][0]
man = json.load(open(f"{root}/blobs/sha256/" + m["digest"].split(":")[1]))
assert len(man["layers"]) == 1, man["layers"]
print(man["layers"][0]["digest"].split(":")[1])
PY
)
cp "$L/blobs/sha256/$layer" "$BUILD/rootfs.tar.gz"
chmod 0644 "$BUILD/rootfs.tar.gz"
[[ $(sha256sum <"$BUILD/rootfs.tar.gz" | cut -d' ' -f1) == "$layer" ]] || { echo "$0: layer copy mismatch" >&2; exit 1; }
rm -rf "$OUT/oci"
mv "$L" "$OUT/oci"
mv "$BUILD/rootfs.tar.gz" "$OUT/rootfs.tar.gz"
log "packed in $((SECONDS - start)) s: $OUT/oci:rootfs, $OUT/rootfs.tar.gz ($(du -h "$OUT/rootfs.tar.gz" | cut -f1), sha256:$layer)"
