#!/usr/bin/env bash
# Rootless strata vs rootless podman, in one run, as one unprivileged user made for the run
# (useradd, with a subordinate range; removed at exit), median of RUNS (default 3) wall times:
#   pull   the benchmark rootfs split into four layers (bench-common.sh's four_layers), from
#          Debian's docker-registry on 127.0.0.1 (plain HTTP), into a fresh store each run
#   run    `run --rm --network none IMAGE true`
#   files  create 10k files, then `rm -rf` them, inside a container (`--rm`, one command)
#   read   every file under /usr read once inside a container (`find /usr -type f -exec cat`):
#          the data path, where FUSE passthrough (root mode's strata-fuse) would matter
# Lines: strata with kernel overlay (userxattr) and with strata-fuse, which runs without FUSE
# passthrough rootless (passthrough needs CAP_SYS_ADMIN in the initial namespace): every read and
# write goes through the daemon, and the two strata lines show what that costs; podman with its
# native overlay (rootless kernel overlay) and with fuse-overlayfs (overlay.mount_program).
# /dev/fuse is opened to the user for the run (udev's 0666; this machine has no udev) and put
# back at exit.
# usage: sudo scripts/bench-rootless.sh [BENCHDIR] [RUNS]   (record timings only when `uptime` < 0.5)
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh" rootless 3 "$@"
command -v docker-registry >/dev/null || { echo "bench-rootless: docker-registry not installed" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "bench-rootless: run as root (it makes a user of its own)" >&2; exit 1; }
cargo build --release -p strata-fuse --quiet
uptime >&2
four_layers   # $L: the rootfs split into four layers (bench-common.sh)

U=strb$$
H=$W/home RT=$W/run PR=/tmp/strb-$$
FUSE_MODE=$(stat -c %a /dev/fuse)
REG_PID=
cleanup() {
    set +e
    [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null
    if id "$U" >/dev/null 2>&1; then
        # Every process of the user (its pause processes, FUSE daemons), by pid.
        for p in $(ps -u "$U" -o pid= 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
        sleep 0.5
        userdel "$U" 2>/dev/null
    fi
    chmod "$FUSE_MODE" /dev/fuse
    for m in $(awk -v d="$W" '$2 ~ "^"d {print $2}' /proc/mounts | sort -r); do umount -l "$m"; done
    rm -rf "$PR"
    [ "${KEEP:-0}" = 1 ] || rm -rf "$W"
}
trap cleanup EXIT

# A private registry on a free port, the image pushed to it.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$W/registry"
cat >"$W/registry/config.yml" <<EOF
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $W/registry/data}}
http: {addr: 127.0.0.1:$PORT}
EOF
docker-registry serve "$W/registry/config.yml" >"$W/registry/log" 2>&1 &
REG_PID=$!
for _ in $(seq 100); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/v2/')" 2>/dev/null && break
    sleep 0.1
done
REF=127.0.0.1:$PORT/bench:1
skopeo copy -q --dest-tls-verify=false "oci:$L:layers" "docker://$REF"

# The user: a subordinate range from useradd, a home and a runtime dir of its own (no logind),
# a short podman run root (containers/storage refuses one over 50 characters).
useradd --no-create-home --shell /bin/sh --home-dir "$H" "$U"
chmod 755 "$W"
mkdir -p "$H" "$RT" "$PR"
chown "$U:$U" "$H" "$RT" "$PR"
chmod 700 "$H" "$RT" "$PR"
chmod 666 /dev/fuse
as_user() {
    (cd "$H" && setpriv --reuid "$U" --regid "$U" --init-groups env -i HOME="$H" USER="$U" \
        XDG_RUNTIME_DIR="$RT" PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@")
}
# strata with its store under $H/DIR; podman with its storage under $H/DIR (fuse: fuse-overlayfs).
sx() { local d=$1; shift; as_user env XDG_DATA_HOME="$H/$d" "$S" "$@"; }
px() { # DIR native|fuse ARGS...
    local d=$1 kind=$2 opts=()
    shift 2
    [ "$kind" = fuse ] && opts=(--storage-opt overlay.mount_program=/usr/bin/fuse-overlayfs)
    as_user podman --root "$H/$d/storage" --runroot "$PR/$d" --storage-driver overlay "${opts[@]}" \
        --cgroup-manager cgroupfs --events-backend none "$@"
}
# A store's files belong to the user's subordinate ids: root removes them.
wipe() { rm -rf "${H:?}/$1" "${PR:?}/$1"; }
now() { date +%s.%N; }
# median of RUNS timings of: PREP (untimed), then CMD... (sync included)
timeit() { # PREP CMD...
    local prep=$1; shift
    for _ in $(seq "$RUNS"); do
        eval "$prep"; sync
        local s e; s=$(now); "$@" >/dev/null; sync; e=$(now)
        echo "$e - $s" | bc
    done | median
}
IMG=$REF
create10k='mkdir /t && cd /t && seq 10000 | xargs touch && cd / && rm -rf /t'
readall='find /usr -type f -exec cat {} + >/dev/null'

declare -A T
# pull, into a fresh store each run; the last one stays for run and files.
T[pull-strata]=$(timeit "wipe st" sx st pull -q "$IMG")
T[pull-podman]=$(timeit "wipe pn" px pn native pull -q --tls-verify=false "docker://$IMG")
T[pull-podman-fuse]=$(timeit "wipe pf" px pf fuse pull -q --tls-verify=false "docker://$IMG")
for b in kernel fuse; do
    T[run-strata-$b]=$(timeit "" sx st run --rm --backend "$b" --network none "$IMG" -- true)
    T[files-strata-$b]=$(timeit "" sx st run --rm --backend "$b" --network none "$IMG" -- sh -c "$create10k")
    T[read-strata-$b]=$(timeit "" sx st run --rm --backend "$b" --network none "$IMG" -- sh -c "$readall")
done
T[run-podman]=$(timeit "" px pn native run --rm --network none "$IMG" true)
T[files-podman]=$(timeit "" px pn native run --rm --network none "$IMG" sh -c "$create10k")
T[run-podman-fuse]=$(timeit "" px pf fuse run --rm --network none "$IMG" true)
T[files-podman-fuse]=$(timeit "" px pf fuse run --rm --network none "$IMG" sh -c "$create10k")
T[read-podman]=$(timeit "" px pn native run --rm --network none "$IMG" sh -c "$readall")
T[read-podman-fuse]=$(timeit "" px pf fuse run --rm --network none "$IMG" sh -c "$readall")
T[pull-strata-kernel]=${T[pull-strata]} T[pull-strata-fuse]=${T[pull-strata]}

mb=$(du -sm "$BENCH/rootfs" | cut -f1)
printf '\nrootless, user %s, image %s (4 layers, %s MB), median of %s, seconds\n' "$U" "$REF" "$mb" "$RUNS"
printf '%-8s %14s %14s %14s %18s\n' test "strata kernel" "strata fuse" "podman native" "podman fuse-ovl"
for t in pull run files read; do
    printf '%-8s %14.3f %14.3f %14.3f %18.3f\n' "$t" "${T[$t-strata-kernel]}" "${T[$t-strata-fuse]}" \
        "${T[$t-podman]}" "${T[$t-podman-fuse]}"
done
echo "ratios (podman / strata, same kind of mount; above 1 means strata is faster):"
for t in pull run files read; do
    printf '  %-6s native %6.2fx   fuse %6.2fx   strata fuse/kernel %6.2fx\n' "$t" \
        "$(echo "${T[$t-podman]} / ${T[$t-strata-kernel]}" | bc -l)" \
        "$(echo "${T[$t-podman-fuse]} / ${T[$t-strata-fuse]}" | bc -l)" \
        "$(echo "${T[$t-strata-fuse]} / ${T[$t-strata-kernel]}" | bc -l)"
done
