#!/usr/bin/env bash
# Installs PyFlink (apache-flink from PyPI: Flink 2.x jars + RocksDB) into a cached venv and
# prints the venv's python path on stdout. Idempotent: a venv whose pyflink imports is reused.
# Cache dir: $TWINSITE_FLINK_VENV, else $HOME/.cache/twinsite/flink-venv.
set -euo pipefail
venv="${TWINSITE_FLINK_VENV:-$HOME/.cache/twinsite/flink-venv}"
py="$venv/bin/python"
if [ -x "$py" ] && "$py" -c 'import pyflink' >/dev/null 2>&1; then
  echo "$py"
  exit 0
fi
command -v java >/dev/null || { echo "setup-venv: java (17) is required by Flink" >&2; exit 1; }
mkdir -p "$(dirname "$venv")"
# A half-built venv from an interrupted install is rebuilt from scratch.
rm -rf "$venv"
python3 -m venv "$venv" >&2
"$py" -m pip install --quiet --disable-pip-version-check "apache-flink>=2,<3" >&2
"$py" -c 'import pyflink' >&2
echo "$py"
