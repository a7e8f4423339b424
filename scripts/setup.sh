#!/usr/bin/env bash
# Install what strata's build, tests, demo and benchmarks need on a fresh Debian machine (as root).
# Idempotent: skips apt when everything is present.
set -euo pipefail
pkgs=(umoci skopeo runc fuse3 libfuse3-dev pkg-config fuse-overlayfs busybox-static debootstrap
      hyperfine attr zstd bc podman python3 ca-certificates libacl1-dev)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "setup: cargo not found (install a Rust toolchain)" >&2; exit 1; }
# overlay and fuse: loaded on demand on most kernels; make sure.
modprobe overlay 2>/dev/null || true
modprobe fuse 2>/dev/null || true
# mount(8) helper for `mount -t fuse.strata-fuse SOURCE DIR -o lowerdir=...`: runs strata-fuse from
# PATH, else this checkout's release or debug build.
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
helper=/sbin/mount.fuse.strata-fuse
want=$(cat <<HELPER
#!/bin/sh
# Installed by $repo/scripts/setup.sh
for b in "\$(command -v strata-fuse)" "$repo/target/release/strata-fuse" "$repo/target/debug/strata-fuse"; do
    [ -n "\$b" ] && [ -x "\$b" ] && exec "\$b" "\$@"
done
echo "mount.fuse.strata-fuse: strata-fuse not found (cargo build --workspace in $repo)" >&2
exit 1
HELPER
)
if [ "$(cat "$helper" 2>/dev/null)" != "$want" ]; then
    printf '%s\n' "$want" > "$helper.tmp" && chmod 755 "$helper.tmp" && mv "$helper.tmp" "$helper"
fi
# pjdfstest (POSIX suite run by fuse/tests/posix.rs and scripts/posix-fuse.sh), built from crates.io
# into target/tools (libacl1-dev above is needed to link it); about 40 s on 2 cores.
cd "$repo"
if [ ! -x target/tools/bin/pjdfstest ]; then
    echo "setup: installing pjdfstest into target/tools" >&2
    cargo install --locked pjdfstest --version 0.2.2 --root "$PWD/target/tools"
fi
