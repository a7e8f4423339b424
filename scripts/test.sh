#!/usr/bin/env bash
# Run every test: unit tests, integration tests against umoci/skopeo/runc, hostile-input tests.
# Privileged tests need root; with CI set they fail instead of skipping.
# Every test binary runs, even after one fails; the last lines are the totals, alone on a line:
#   tests: N passed, N failed, N skipped
# (skipped: #[ignore]d tests and privileged tests that printed "SKIPPED (not root)"), then, if
# anything failed, which binaries and tests. Exit status 1 when anything failed.
# STRATA_TEST_THREADS sets --test-threads (default 2).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" test
find_cargo
scripts/setup.sh
say "building the workspace and its tests (cargo build --workspace --all-targets)"
cargo build --workspace --all-targets
LOG=$(mktemp /tmp/strata-test.XXXXXX)
trap 'rm -f "$LOG"' EXIT
say "running every test binary (--test-threads=${STRATA_TEST_THREADS:-2})"
set +e
cargo test --workspace --no-fail-fast -- --test-threads="${STRATA_TEST_THREADS:-2}" 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
# strata-fuse's own tests (pjdfstest, the kernel differential, load, stress) and podman's
# mount_program test once more over FUSE
# over io_uring, where the kernel has it (Linux 6.14+); test-fuse-uring.sh turns the fuse
# module's enable_uring on for the run and restores it.
if [ -e /sys/module/fuse/parameters/enable_uring ]; then
    say "strata-fuse's tests again, over FUSE over io_uring"
    echo "=== transport: io_uring" >>"$LOG"
    scripts/test-fuse-uring.sh -p strata-fuse --no-fail-fast -- --test-threads="${STRATA_TEST_THREADS:-2}" 2>&1 | tee -a "$LOG"
    uring_status=${PIPESTATUS[0]}
    [ "$uring_status" -eq 0 ] || status=$uring_status
    # podman with strata-fuse as its mount_program, over the ring too.
    scripts/test-fuse-uring.sh -p strata-cli --test it -- --test-threads="${STRATA_TEST_THREADS:-2}" podman:: 2>&1 | tee -a "$LOG"
    uring_status=${PIPESTATUS[0]}
    [ "$uring_status" -eq 0 ] || status=$uring_status
elif [ -n "${CI:-}" ]; then
    echo "SKIPPED: FUSE over io_uring: this kernel has no /sys/module/fuse/parameters/enable_uring" | tee -a "$LOG"
fi
set -e

# cargo names each binary before running it ("Running tests/podman.rs (target/debug/deps/podman-
# 0123abcd)", "Doc-tests strata"); libtest ends each with "test result: ...". A binary that
# fails without that line (killed, aborted) counts as one failure.
awk -v status="$status" '
function name(line,   src, bin) {
    if (line ~ /^ *Doc-tests /) { sub(/^ *Doc-tests /, "", line); return "doc-tests " line }
    sub(/^ *Running /, "", line); sub(/^unittests /, "", line)
    src = line; sub(/ \(.*$/, "", src)
    bin = line; sub(/^.*\//, "", bin); sub(/-[0-9a-f]+\)$/, "", bin)
    return src " (" bin ")"
}
function close_binary() {
    if (cur != "" && !seen) { failed++; bad[++nbad] = cur ": no test result (crashed?)" }
    cur = ""
}
/^=== transport: / { close_binary(); transport = " over " $3; next }
/^ *(Running|Doc-tests) / { close_binary(); cur = name($0) transport; seen = 0; tests = ""; next }
/^test .* \.\.\. FAILED$/ { t = $0; sub(/^test /, "", t); sub(/ \.\.\. FAILED$/, "", t)
    tests = tests (tests == "" ? "" : ", ") t; next }
/SKIPPED \(not root\): / { skipped_root += gsub(/SKIPPED \(not root\): /, "&") }
/^test result: / {
    seen = 1
    for (i = 1; i <= NF; i++) {
        n = $(i - 1) + 0
        if ($i ~ /^passed;?$/) passed += n
        else if ($i ~ /^failed;?$/) { failed += n; f = n }
        else if ($i ~ /^ignored;?$/) ignored += n
    }
    if ($3 == "FAILED.") bad[++nbad] = cur ": " (tests == "" ? f " failed" : tests)
    next
}
END {
    close_binary()
    # a privileged test that skipped still reports "ok": it did not pass.
    passed -= skipped_root
    if (status != 0 && failed == 0) { failed = 1; bad[++nbad] = "cargo test exited with status " status }
    printf "tests: %d passed, %d failed, %d skipped\n", passed, failed, ignored + skipped_root
    if (nbad) {
        printf "failed:"
        for (i = 1; i <= nbad; i++) printf " %s%s", bad[i], (i < nbad ? ";" : "\n")
    }
    exit (failed > 0)
}' "$LOG"
