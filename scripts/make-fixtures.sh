#!/usr/bin/env bash
# Build strata's test images with real tools (umoci, skopeo, python3).
#
# Usage: scripts/make-fixtures.sh OUTDIR
#
# Produces (see scripts/fixtures/README.md):
#   OUTDIR/oci            OCI layout, tags: busybox multi multi-opaque many-1 many-2 many-128 many-500
#   OUTDIR/oci-zstd       OCI layout, tag multi-zstd   (zstd layers, via skopeo)
#   OUTDIR/oci-plain      OCI layout, tag multi-plain  (uncompressed layers, via skopeo)
#   OUTDIR/oci-index      OCI layout, tag multi-arch   (image index: linux/amd64 + linux/arm64)
#   OUTDIR/multi.oci.tar            oci-archive of multi
#   OUTDIR/multi.docker.tar         docker-archive of multi (skopeo: legacy style)
#   OUTDIR/multi.docker-oci.tar     docker-archive in docker 25+ "save" style (OCI layout + manifest.json)
#
# Idempotent: everything is rebuilt in OUTDIR/.build and moved into place at the end; a rerun
# replaces the previous fixtures. All timestamps are pinned, so reruns give the same digests.
# Needs root (device nodes, chown), umoci, skopeo, python3, busybox-static. No network.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
OUT=$(mkdir -p "$1" && cd "$1" && pwd)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUSYBOX=${BUSYBOX:-/bin/busybox}
for tool in umoci skopeo python3; do
    command -v "$tool" >/dev/null || { echo "$0: $tool not found" >&2; exit 1; }
done
[[ -x $BUSYBOX ]] || { echo "$0: $BUSYBOX missing (apt-get install busybox-static)" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || { echo "$0: must run as root (mknod, chown)" >&2; exit 1; }

# Pinned times: image "created" fields and the mtime of every rootfs entry
# (except the files under data/mtime/, whose times are part of the fixture).
EPOCH=1700000000
CREATED=$(date -u -d "@$EPOCH" +%Y-%m-%dT%H:%M:%SZ)

BUILD=$OUT/.build
rm -rf "$BUILD"
mkdir -p "$BUILD"
trap 'rm -rf "$BUILD"' EXIT
L=$BUILD/oci
B=$BUILD/bundle
R=$B/rootfs

log() { printf '== %s\n' "$*" >&2; }

# Every entry of the rootfs gets mtime EPOCH before each repack, except the entries under
# data/mtime/ whose old (and future) times are part of the fixture. Unchanged entries thus keep
# their mtime and stay out of the next layer, and the layer bytes do not depend on the clock.
# (touch -h never opens the entry, so device nodes and FIFOs are safe.)
pin_times() {
    find "$R" -path "$R/data/mtime/*" -prune -o -exec touch -h -d "@$EPOCH" {} +
}
repack() { # TAG COMMENT
    pin_times
    umoci repack --refresh-bundle --image "$L:$1" \
        --history.created "$CREATED" --history.created_by "make-fixtures.sh: $2" \
        --history.comment "$2" "$B"
}

############################################################################ busybox
log "busybox"
umoci init --layout "$L"
umoci new --image "$L:busybox"
umoci config --image "$L:busybox" --no-history --created "$CREATED" \
    --architecture amd64 --os linux \
    --config.cmd /bin/sh --config.workingdir / \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
umoci unpack --image "$L:busybox" "$B" >/dev/null
mkdir -p "$R"/{bin,etc,root,home,var,usr/bin,dev,proc,sys,tmp}
chmod 0755 "$R" "$R"/{bin,etc,home,var,usr,usr/bin,dev,proc,sys}
chmod 0700 "$R/root"
chmod 1777 "$R/tmp"
install -m 0755 "$BUSYBOX" "$R/bin/busybox"
for applet in $("$BUSYBOX" --list); do
    [[ $applet == busybox ]] && continue
    ln -sf busybox "$R/bin/$applet"
done
cat >"$R/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
P
cat >"$R/etc/group" <<'G'
root:x:0:
nogroup:x:65534:
G
echo strata >"$R/etc/hostname"
chmod 0644 "$R"/etc/{passwd,group,hostname}
repack busybox "busybox-static $(dpkg-query -W -f '${Version}' busybox-static 2>/dev/null || echo unknown)"

############################################################################ multi
# The bundle now tracks busybox; each repack below adds one layer under tag "multi".
log "multi layer 1: modes, owners, links, devices, xattrs, names, times, big file"
D=$R/data
mkdir -p "$D"/{modes,owners,links,hard/sub,dev,xattr,long,empty,mtime,del/dir1/b,replace/d2f,redo,chmod,chown}
# modes
for m in 0644 0755 0600 0000 0444; do echo "mode $m" >"$D/modes/f$m"; chmod "$m" "$D/modes/f$m"; done
echo suid >"$D/modes/setuid";  chmod 04755 "$D/modes/setuid"
echo sgid >"$D/modes/setgid";  chmod 02755 "$D/modes/setgid"
mkdir "$D/modes/sticky";       chmod 01777 "$D/modes/sticky"
mkdir "$D/modes/sgiddir";      chmod 02775 "$D/modes/sgiddir"
mkdir "$D/modes/dir0700";      chmod 0700 "$D/modes/dir0700"
echo x >"$D/modes/dir0700/inside"
# owners
echo u1000 >"$D/owners/u1000";   chown 1000:1000 "$D/owners/u1000"
echo nobody >"$D/owners/nobody"; chown 65534:65534 "$D/owners/nobody"
echo mixed >"$D/owners/mixed";   chown 0:1000 "$D/owners/mixed"
mkdir "$D/owners/d1000"; echo in >"$D/owners/d1000/f"
chown -R 1000:1000 "$D/owners/d1000"; chmod 0700 "$D/owners/d1000"
ln -s ../modes/f0644 "$D/owners/symlink1000"; chown -h 1000:1000 "$D/owners/symlink1000"
# symlinks
ln -s ../modes/f0644 "$D/links/relative"
ln -s /etc/passwd "$D/links/absolute"
ln -s /nonexistent/target "$D/links/dangling"
ln -s ../modes "$D/links/todir"
ln -s relative "$D/links/chain"
ln -s ../../../../../../etc/hostname "$D/links/updotdot"
ln -s todir/f0755 "$D/links/through-dir"
# hardlinks: group of three inside this layer, and g1/g2 modified in layer 2, g3 added in layer 3
echo "hard a" >"$D/hard/a"
ln "$D/hard/a" "$D/hard/b"
ln "$D/hard/a" "$D/hard/sub/c"
echo "group g" >"$D/hard/g1"
ln "$D/hard/g1" "$D/hard/g2"
echo "hard suid" >"$D/hard/s1"; chmod 04755 "$D/hard/s1"; ln "$D/hard/s1" "$D/hard/s2"
# devices and fifos
mknod "$D/dev/null" c 1 3
mknod "$D/dev/zero" c 1 5
mknod "$D/dev/loop0" b 7 0
mknod -m 0600 "$D/dev/bigdev" c 250 1048575   # major/minor that need the full dev_t encoding
mkfifo "$D/dev/fifo"
mknod "$D/dev/looksLikeWhiteout" c 0 0          # a real 0:0 char device in an image
# xattrs (user.* only: trusted.*/security.* are not portable)
echo xattrs >"$D/xattr/file"
mkdir "$D/xattr/dir"
python3 - "$D/xattr" <<'PY'
import os, sys
d = sys.argv[1]
os.setxattr(f"{d}/file", "user.test", b"hello")
os.setxattr(f"{d}/file", "user.empty", b"")
os.setxattr(f"{d}/file", "user.binary", bytes(range(256)))
os.setxattr(f"{d}/file", "user.long", b"v" * 3000)
os.setxattr(f"{d}/dir", "user.dirattr", b"on a directory")
PY
# long names and deep paths
python3 - "$D/long" <<'PY'
import os, sys
d = sys.argv[1]
for n in (99, 100, 101, 155, 156, 250, 255):
    with open(os.path.join(d, ("n%03d-" % n) + "x" * (n - 5)), "w") as f:
        f.write(f"name of {n} bytes\n")
deep = os.path.join(d, "deep", *[("%02d-" % i) + "d" * 57 for i in range(6)])  # >360 chars
os.makedirs(deep)
with open(os.path.join(deep, "file-at-depth"), "w") as f:
    f.write("deep\n")
os.symlink("t" * 200 + "/" + "u" * 200, os.path.join(d, "longtarget"))  # link target > 100 bytes
os.link(os.path.join(deep, "file-at-depth"), os.path.join(d, "hardlink-to-deep"))
with open(os.path.join(d, "sp ace & ünïcødé ✓"), "w") as f:
    f.write("utf-8 name\n")
PY
# preserved mtimes (nanoseconds too), on a file, a symlink and a directory
echo old >"$D/mtime/old";          touch -d '2001-02-03 04:05:06.123456789 UTC' "$D/mtime/old"
echo older >"$D/mtime/pre1970";    touch -d '1969-07-20 20:17:40 UTC' "$D/mtime/pre1970"
echo future >"$D/mtime/future";    touch -d '2100-01-01 00:00:00 UTC' "$D/mtime/future"
ln -s old "$D/mtime/oldlink";      touch -h -d '2002-02-02 02:02:02 UTC' "$D/mtime/oldlink"
mkdir "$D/mtime/olddir"; echo x >"$D/mtime/olddir/x"
touch -d '2003-03-03 03:03:03 UTC' "$D/mtime/olddir/x" "$D/mtime/olddir"
# a larger file: 5 MiB of seeded pseudo-random bytes, and a sparse-looking file of zeros
python3 -c '
import random, sys
r = random.Random(20240601)
sys.stdout.buffer.write(r.randbytes(5 * 1024 * 1024))' >"$D/big.bin"
head -c 1048576 /dev/zero >"$D/zeros.bin"
# things later layers delete / replace / change
echo "to delete" >"$D/del/file1"
echo a >"$D/del/dir1/a"; echo c >"$D/del/dir1/b/c"
echo keep >"$D/del/keep"
echo "file, becomes a dir" >"$D/replace/f2d"
echo "in a dir, which becomes a file" >"$D/replace/d2f/inner"
mkdir "$D/replace/d2f/sub"; echo deeper >"$D/replace/d2f/sub/x"
echo old1 >"$D/redo/old1"; echo old2 >"$D/redo/old2"; mkdir "$D/redo/oldsub"; echo o >"$D/redo/oldsub/o"
echo "chmod me" >"$D/chmod/f"; chmod 0644 "$D/chmod/f"
echo "chown me" >"$D/chown/f"
repack multi "multi: basics"

log "multi layer 2: deletions, replacements, mode-only change, hardlink group rewrite"
rm "$D/del/file1"
rm -r "$D/del/dir1"
rm "$R/bin/vi"                              # delete something from the base layer
rm "$D/replace/f2d"; mkdir "$D/replace/f2d"; echo "now inside a dir" >"$D/replace/f2d/inner"
rm -r "$D/replace/d2f"; echo "now a file" >"$D/replace/d2f"
chmod 0600 "$D/chmod/f"                     # mode-only change
echo "appended in layer 2" >>"$D/hard/g1"   # in place: g1 and g2 are one inode
repack multi "multi: deletions and replacements"

log "multi layer 3: dir deleted and recreated, owner-only change, link to lower file, xattr edit"
rm -r "$D/redo"; mkdir "$D/redo"; echo new1 >"$D/redo/new1"
chown 1000:1000 "$D/chown/f"                # owner-only change
ln "$D/hard/g1" "$D/hard/g3"                # new name for a file from a lower layer
# umoci's mtree diff ignores xattr-only changes, so the content changes too
echo "xattrs changed in layer 3" >>"$D/xattr/file"
python3 -c 'import os, sys; os.setxattr(sys.argv[1], "user.test", b"changed"); os.removexattr(sys.argv[1], "user.binary")' "$D/xattr/file"
repack multi "multi: recreate dir, chown, xattr"

log "multi layer 4: resurrect deleted names, delete special files"
echo "resurrected with new content" >"$D/del/file1"
mkdir "$D/del/dir1"; echo "new a" >"$D/del/dir1/a"
rm "$D/replace/f2d/inner"
rm "$D/links/dangling" "$D/dev/loop0" "$D/dev/fifo"
mkdir -p "$D/late"; echo late >"$D/late/file"
repack multi "multi: resurrect"

log "multi-opaque (python helper: umoci never writes .wh..wh..opq)"
python3 "$HERE/fixtures/addopaque.py" --layout "$L" --base multi --tag multi-opaque --dir data/redo --created "$CREATED"

############################################################################ many-N
log "many-N (python helper)"
for n in 1 2 128 500; do
    python3 "$HERE/fixtures/mklayers.py" --layout "$L" --base busybox --tag "many-$n" --layers "$n" --created "$CREATED"
done

############################################################################ other layouts
log "skopeo: zstd, uncompressed, oci-archive, docker-archive"
skopeo copy -q --dest-compress-format zstd "oci:$L:multi" "oci:$BUILD/oci-zstd:multi-zstd"
# skopeo 1.9: --dest-decompress only acts on the dir: transport, and oci: re-compresses
# uncompressed layers unless --dest-oci-accept-uncompressed-layers; so go through dir:.
skopeo copy -q --dest-decompress "oci:$L:multi" "dir:$BUILD/plain-dir"
skopeo copy -q --dest-oci-accept-uncompressed-layers "dir:$BUILD/plain-dir" "oci:$BUILD/oci-plain:multi-plain"
skopeo copy -q "oci:$L:multi" "oci-archive:$BUILD/multi.oci.tar:multi"
skopeo copy -q "oci:$L:multi" "docker-archive:$BUILD/multi.docker.tar:multi:latest"
python3 "$HERE/fixtures/mkdockersave.py" --layout "$L" --tag multi --repo-tag multi:latest \
    --out "$BUILD/multi.docker-oci.tar"

log "multi-platform index"
python3 "$HERE/fixtures/mkindex.py" --layout "$L" --tag multi --out "$BUILD/oci-index" --out-tag multi-arch

############################################################################ validate, install
log "validate"
umoci gc --layout "$L"    # drops the blobs of umoci new's empty image (they carry a wall-clock time)
for tag in busybox multi multi-opaque many-1 many-2 many-128 many-500; do
    umoci stat --image "$L:$tag" >/dev/null
    skopeo inspect "oci:$L:$tag" >/dev/null
done
skopeo inspect "oci:$BUILD/oci-zstd:multi-zstd" >/dev/null
skopeo inspect "oci:$BUILD/oci-plain:multi-plain" >/dev/null
skopeo inspect "oci:$BUILD/oci-index:multi-arch" >/dev/null
skopeo inspect "oci-archive:$BUILD/multi.oci.tar" >/dev/null
skopeo inspect "docker-archive:$BUILD/multi.docker.tar" >/dev/null

for x in oci oci-zstd oci-plain oci-index multi.oci.tar multi.docker.tar multi.docker-oci.tar; do
    rm -rf "${OUT:?}/$x"
    mv "$BUILD/$x" "$OUT/$x"
done
log "done: $OUT"
