#!/usr/bin/env bash
# Run every test: unit tests, integration tests against umoci/skopeo/runc, hostile-input tests.
# Privileged tests need root; with CI set they fail instead of skipping.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
cargo build --workspace --all-targets
cargo test --workspace -- --test-threads="${STRATA_TEST_THREADS:-2}"
