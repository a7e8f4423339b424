#!/usr/bin/env bash
# strata end to end on the built-in sample image: build the sample (busybox) image with umoci,
# import it, mount a container, run a command in it with runc, commit the change, export the new
# image and load it back with skopeo and umoci.
#
# Usage: sudo scripts/demo.sh [WORKDIR]     (default WORKDIR: /var/tmp/strata-demo)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
WORK=${1:-/var/tmp/strata-demo}
scripts/setup.sh
cargo build --release --workspace --quiet
export PATH=$PWD/target/release:$PATH
export STRATA_ROOT=$WORK/root
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "build the sample images with umoci ($WORK/fixtures)"
scripts/make-fixtures.sh "$WORK/fixtures" >/dev/null
rm -rf "$STRATA_ROOT" "$WORK/export"

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
echo "demo complete: state in $STRATA_ROOT"
