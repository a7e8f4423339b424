#!/usr/bin/env bash
# strata end to end on the built-in sample image: build the sample (busybox) image with umoci,
# import it, mount a container, run a command in it with runc, commit the change, export the new
# image and load it back with skopeo and umoci.
#
# Usage: scripts/demo.sh [WORKDIR]     (as root, or through sudo; default WORKDIR: /var/tmp/strata-demo)
# Everything the demo makes is in WORKDIR: the state root (WORKDIR/root, runc's state included),
# the sample images (WORKDIR/fixtures) and the export (WORKDIR/export). A rerun starts afresh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" demo
need_root
find_cargo
WORK=$(cd "$CALLER_PWD" && mkdir -p "${1:-/var/tmp/strata-demo}" && cd "${1:-/var/tmp/strata-demo}" && pwd)
scripts/setup.sh
say "building strata (release, takes a few minutes the first time)"
cargo build --release --workspace --quiet
export PATH=$REPO/target/release:$PATH
export STRATA_ROOT=$WORK/root
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# A previous run cut short may have left mounts under WORK: unmount them before removing it.
awk -v w="$WORK/" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
    while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done
rm -rf "$STRATA_ROOT" "$WORK/export" "$WORK/export-bundle"

step "build the sample images with umoci ($WORK/fixtures)"
scripts/make-fixtures.sh "$WORK/fixtures" >/dev/null

step "import (digests verified, each layer unpacked once)"
strata image import "$WORK/fixtures/oci:busybox"
strata image ls

step "create and mount a container"
strata container create busybox demo
strata container mount demo
strata container ls
strata container umount demo

step "run a command with runc (writes go to the container's upper dir)"
strata run busybox --name demo-run -- sh -c 'echo "hello from $(hostname)"; mkdir -p /srv; echo strata > /srv/greeting; rm /bin/vi'
strata container diff demo-run

step "commit the change as a new image"
strata container commit demo-run busybox-greeting --message "demo commit"
strata image ls

step "export as an OCI layout and read it back with skopeo and umoci"
strata image export busybox-greeting "$WORK/export:greeting"
skopeo inspect "oci:$WORK/export:greeting" | head -n 12
umoci unpack --image "$WORK/export:greeting" "$WORK/export-bundle" >/dev/null
cat "$WORK/export-bundle/rootfs/srv/greeting"
test ! -e "$WORK/export-bundle/rootfs/bin/vi" && echo "/bin/vi deleted, as committed"
rm -rf "$WORK/export-bundle"

step "run the committed image"
strata run busybox-greeting --rm -- cat /srv/greeting
echo
echo "demo complete. Everything it made is in $WORK (remove it with: rm -rf $WORK):"
echo "  root/      the state root: $REPO/target/release/strata --root $STRATA_ROOT image ls"
echo "  fixtures/  the sample images"
echo "  export/    the committed image, exported"
