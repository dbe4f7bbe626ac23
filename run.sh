#!/usr/bin/env bash
# Runs the controller on its embedded default: two simulated sites, local directories as
# HDFS, embedded state, API on 127.0.0.1:8080. Extra arguments go to `twinsite run`.
set -euo pipefail
cd "$(dirname "$0")"
bash tests/setup.sh
exec cargo run --release --locked --bin twinsite -- run "$@"
