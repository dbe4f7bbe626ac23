#!/usr/bin/env bash
# Installs what building and testing twinsite needs on a fresh Debian bookworm machine:
# cmake + libclang (HiGHS), protoc (etcd-client), etcd-server and prometheus (real servers
# the tests start on loopback; prometheus brings promtool, which checks and unit-tests the
# rules in deploy/monitoring), chromium (the operator page's browser test). Idempotent:
# installs only what is missing.
set -euo pipefail

need=()
command -v cmake >/dev/null || need+=(cmake)
command -v protoc >/dev/null || need+=(protobuf-compiler)
# protoc's well-known types (google/protobuf/*.proto): only a Recommends of protobuf-compiler.
[ -f /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
command -v etcd >/dev/null || need+=(etcd-server)
command -v prometheus >/dev/null || need+=(prometheus)
command -v promtool >/dev/null || need+=(prometheus)
# The operator page's test drives a real headless Chromium (tests/web_page.rs).
command -v chromium >/dev/null || need+=(chromium)
ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || need+=(libclang-dev)

if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Prometheus from Debian starts a system service on install; tests start their own.
if command -v systemctl >/dev/null 2>&1; then systemctl stop prometheus >/dev/null 2>&1 || true; fi
