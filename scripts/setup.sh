#!/usr/bin/env bash
# Install what strata's build, tests, demo and benchmarks need on a fresh Debian machine (as root).
# Idempotent: skips apt when everything is present. Needs root only for what is missing (a user
# can run it, and scripts/test.sh, once root has). Prints one line per step it takes; the logs
# of apt and cargo install are shown only when they fail.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" setup
find_cargo   # first: without it nothing else is worth installing
LOG=$(mktemp /tmp/strata-setup.XXXXXX)
trap 'rm -f "$LOG"' EXIT
# quiet WHAT CMD...: CMD's output goes to $LOG, and to stderr only if CMD fails.
quiet() {
    local what=$1
    shift
    if ! "$@" >"$LOG" 2>&1; then
        say "$what failed:"
        cat "$LOG" >&2
        exit 1
    fi
}

pkgs=(umoci skopeo runc fuse3 libfuse3-dev pkg-config fuse-overlayfs busybox-static debootstrap
      hyperfine attr zstd bc podman python3 ca-certificates libacl1-dev
      docker-registry apache2-utils openssl
      containerd golang-go golang-github-containerd-containerd-dev golang-github-gogo-protobuf-dev
      golang-github-containerd-stargz-snapshotter-dev stargz-snapshotter
      containernetworking-plugins iptables iproute2 util-linux buildah uidmap slirp4netns rootlesskit)
# golang-github-containerd-stargz-snapshotter-dev: Go's estargz reader and writer, built offline
# in GOPATH mode: tests/estargz/check reads back the eStargz and zstd:chunked layers strata
# writes, tests/estargz/build makes eStargz layers strata pulls lazily (cli/tests/it/lazy.rs,
# lazy_interop.rs). stargz-snapshotter: its ctr-remote converts images to eStargz and
# zstd:chunked against a private containerd (lazy_interop.rs).
# buildah: `strata build`'s parity tests build the same Containerfiles with `buildah bud`.
# uidmap (newuidmap/newgidmap) and slirp4netns: rootless mode (src/userns/, docs/rootless.md).
# rootlesskit: rootless containerd with strata-snapshotter (docs/rootless.md,
# cli/tests/it/rootless_containerd.rs); containerd-rootless.sh itself is not packaged in Debian.
# containernetworking-plugins, iptables, iproute2: container networking (src/network/) runs the
# CNI plugins bridge, host-local, portmap, loopback and firewall, which call iptables; its tests
# use ip and nsenter (util-linux).
# containerd, golang-go and the containerd/gogo Go sources: strata-snapshotter's build reads
# containerd's snapshots .proto files from the latter, and tests/containerd_suite.rs builds
# containerd's snapshotter conformance suite from them (GOPATH mode, offline).
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    need_root
    say "installing ${missing[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    quiet "apt-get update" apt-get update
    quiet "apt-get install" apt-get install -y --no-install-recommends "${missing[@]}"
fi
# overlay and fuse: loaded on demand on most kernels; make sure.
modprobe overlay 2>/dev/null || true
modprobe fuse 2>/dev/null || true

# mount(8) helper for `mount -t fuse.strata-fuse SOURCE DIR -o lowerdir=...`: runs strata-fuse from
# PATH, else this checkout's release or debug build. One installed by another checkout's setup.sh
# is replaced (with a note); any other file of that name is someone else's and is left alone.
helper=/sbin/mount.fuse.strata-fuse
marker="# Installed by $REPO/scripts/setup.sh"
want=$(cat <<HELPER
#!/bin/sh
$marker
for b in "\$(command -v strata-fuse)" "$REPO/target/release/strata-fuse" "$REPO/target/debug/strata-fuse"; do
    [ -n "\$b" ] && [ -x "\$b" ] && exec "\$b" "\$@"
done
echo "mount.fuse.strata-fuse: strata-fuse not found (cargo build --workspace in $REPO)" >&2
exit 1
HELPER
)
install_helper() {
    if [ "$(id -u)" != 0 ]; then
        say "not root: $helper not installed (mount -t fuse.strata-fuse needs it; run setup as root)"
        return 0
    fi
    printf '%s\n' "$want" >"$helper.tmp" && chmod 755 "$helper.tmp" && mv "$helper.tmp" "$helper"
}
line2=$({ sed -n 2p "$helper" 2>/dev/null || true; } | tr -d '\0')   # the marker (a binary has NULs)
if [ ! -e "$helper" ] && [ ! -L "$helper" ]; then
    say "installing $helper (for mount -t fuse.strata-fuse)"
    install_helper
elif printf '%s\n' "$want" | cmp -s - "$helper"; then
    :
elif [ ! -L "$helper" ] && [ "$line2" = "$marker" ]; then
    install_helper   # an older version of this checkout's helper
elif [ ! -L "$helper" ] && [[ $line2 == "# Installed by "*/scripts/setup.sh ]]; then
    other=${line2#"# Installed by "}
    say "note: $helper ran the strata-fuse of ${other%/scripts/setup.sh}; now this checkout's ($REPO)"
    install_helper
else
    what=$([ -L "$helper" ] && echo " (a symlink to $(readlink "$helper"))" || true)
    say "warning: $helper$what was not installed by strata's setup.sh: left alone."
    say "  mount -t fuse.strata-fuse runs it; to use strata's helper, remove it and run setup again."
fi

# pjdfstest (POSIX suite run by fuse/tests/posix.rs and scripts/posix-fuse.sh), built from crates.io
# into target/tools (libacl1-dev above is needed to link it).
if [ ! -x target/tools/bin/pjdfstest ]; then
    say "building pjdfstest 0.2.2 into target/tools (about a minute)"
    quiet "cargo install pjdfstest" cargo install --locked pjdfstest --version 0.2.2 --root "$REPO/target/tools"
fi

# containerd: strata as a proxy snapshotter plugin. The snippet goes to its own file beside the
# user's config.toml, which is never edited: a config that already imports conf.d/*.toml picks it
# up; otherwise setup says the one line to add. Without any config.toml, a minimal one importing
# conf.d is written. The daemon itself is not started here (see docs/containerd.md).
install_containerd_snippet() {
    local dir=/etc/containerd snippet=/etc/containerd/conf.d/strata.toml
    local mark="# Installed by strata's scripts/setup.sh (docs/containerd.md); setup writes it only when absent."
    local want
    want=$(printf '%s\n' "$mark" 'version = 2' '' '[proxy_plugins.strata]' '  type = "snapshot"' \
        '  address = "/run/strata/snapshotter.sock"')
    if [ "$(id -u)" != 0 ]; then
        say "not root: $snippet not installed (containerd's proxy plugin entry for strata)"
        return 0
    fi
    mkdir -p "$dir/conf.d"
    if [ ! -e "$snippet" ]; then   # once: later edits are the user's
        say "installing $snippet (containerd: [proxy_plugins.strata])"
        printf '%s\n' "$want" >"$snippet.tmp" && mv "$snippet.tmp" "$snippet"
    fi
    if [ ! -e "$dir/config.toml" ]; then
        say "installing $dir/config.toml (version 2, imports conf.d/*.toml)"
        printf '%s\n' "# Written by strata's scripts/setup.sh: there was no containerd config." 'version = 2' \
            "imports = [\"$dir/conf.d/*.toml\"]" >"$dir/config.toml.tmp" && mv "$dir/config.toml.tmp" "$dir/config.toml"
    elif ! grep -Eq '^[[:space:]]*imports[[:space:]]*=.*(conf\.d/\*\.toml|conf\.d/strata\.toml)' "$dir/config.toml"; then
        say "note: $dir/config.toml does not import $snippet (left unedited). To use strata from"
        say "  containerd, add near its top: imports = [\"$dir/conf.d/*.toml\"], then restart containerd."
    fi
}
install_containerd_snippet
