#!/usr/bin/env bash
# The test command: installs what is missing, then format check, clippy and every test.
set -euo pipefail
cd "$(dirname "$0")"
bash tests/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
