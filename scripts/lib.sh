# Sourced by setup.sh, test.sh, demo.sh and .ci/run: what they share.
#   REPO         the checkout (absolute); the sourcing script has cd'ed into it
#   CALLER_PWD   the directory it was started from (for relative arguments)
#   find_cargo   puts cargo on PATH, or says how to get it and exits 1
#   need_root    exits 1 with how to run the script as root
#   private_containerd, local_registry   a containerd, a registry of the caller's own (below)
# usage: source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" NAME   (NAME prefixes messages)
LIB_NAME=${1:-strata}
CALLER_PWD=$PWD
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

say() { printf '%s: %s\n' "$LIB_NAME" "$*" >&2; }

# cargo is usually in ~/.cargo/bin, which PATH lacks under sudo (its secure_path replaces PATH)
# and in shells that never read ~/.cargo/env. Look where rustup puts it: $CARGO_HOME/bin, this
# user's ~/.cargo/bin, then (under sudo) the invoking user's, whose toolchains live in their
# ~/.rustup.
find_cargo() {
    command -v cargo >/dev/null && return 0
    local dirs=() d
    add() { # DIR: a candidate, once
        local x
        [ -n "$1" ] || return 0
        for x in "${dirs[@]}"; do [ "$x" != "$1" ] || return 0; done
        dirs+=("$1")
    }
    add "${CARGO_HOME:+$CARGO_HOME/bin}"
    add "${HOME:+$HOME/.cargo/bin}"
    d=$(getent passwd "$(id -un)" | cut -d: -f6)
    add "${d:+$d/.cargo/bin}"
    if [ -n "${SUDO_USER:-}" ]; then
        d=$(getent passwd "$SUDO_USER" | cut -d: -f6)
        add "${d:+$d/.cargo/bin}"
    fi
    for d in "${dirs[@]}"; do
        if [ -x "$d/cargo" ]; then
            export PATH="$d:$PATH"
            # rustup's cargo proxy looks for toolchains in $RUSTUP_HOME, default ~/.rustup of the
            # current user: point it at the owner's when the cargo found is someone else's.
            if [ -z "${RUSTUP_HOME:-}" ] && [ "$d" != "${HOME:-}/.cargo/bin" ] &&
                [ -d "${d%/.cargo/bin}/.rustup" ]; then
                export RUSTUP_HOME="${d%/.cargo/bin}/.rustup"
            fi
            return 0
        fi
    done
    {
        echo "$LIB_NAME: cargo not found: not on PATH, nor in ${dirs[*]}"
        echo "Install a Rust toolchain (1.85 or newer) with rustup, then run this again:"
        echo "    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal"
        echo "    . \"\$HOME/.cargo/env\""
        echo "(Debian's own cargo package is too old for strata.)"
    } >&2
    exit 1
}

need_root() {
    [ "$(id -u)" = 0 ] && return 0
    say "needs root (mounts, device nodes, apt): run it as root, or as sudo $0"
    exit 1
}

# private_containerd ROOT STATE [STRATA_SOCK]: a containerd of its own (root ROOT, state and
# sockets under STATE, which must be short: unix socket paths hold 108 bytes; CRI off), with
# strata-snapshotter at STRATA_SOCK as the proxy plugin "strata" when given. Returns once it
# answers on STATE/c.sock; its pid is in CTRD_PID.
private_containerd() {
    local root=$1 state=$2 proxy=${3:-}
    mkdir -p "$root" "$state"
    {
        printf 'version = 2\nroot = "%s"\nstate = "%s"\n' "$root" "$state"
        printf 'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        printf '[grpc]\n  address = "%s/c.sock"\n[ttrpc]\n  address = "%s/c.sock.ttrpc"\n' "$state" "$state"
        [ -z "$proxy" ] || printf '[proxy_plugins.strata]\n  type = "snapshot"\n  address = "%s"\n' "$proxy"
    } > "$state/config.toml"
    containerd --config "$state/config.toml" >"$state/containerd.log" 2>&1 &
    CTRD_PID=$!
    for _ in $(seq 200); do ctr -a "$state/c.sock" version >/dev/null 2>&1 && return 0; sleep 0.05; done
    say "containerd did not start: $state/containerd.log"
    return 1
}

# local_registry DIR: Debian's docker-registry on a free port of 127.0.0.1 (plain HTTP), storing
# under DIR (its config and log there too). Returns once it answers; sets REG_ADDR
# (127.0.0.1:PORT) and REG_PID (set before the wait, so a caller's exit trap can stop it).
local_registry() {
    local dir=$1 port
    command -v docker-registry >/dev/null || { say "docker-registry not installed (scripts/setup.sh)"; return 1; }
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    mkdir -p "$dir"
    cat > "$dir/config.yml" <<EOC
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $dir/data}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$port}
EOC
    docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
    REG_PID=$!
    REG_ADDR=127.0.0.1:$port
    for _ in $(seq 100); do
        python3 -c "import urllib.request; urllib.request.urlopen('http://$REG_ADDR/v2/')" 2>/dev/null && return 0
        sleep 0.1
    done
    say "docker-registry did not answer on $REG_ADDR: $dir/log"
    return 1
}
