#!/usr/bin/env bash
# Installs the real servers the test suite runs against (etcd, Prometheus, Chromium) and the Go
# toolchain with gRPC sources (a Go server for the registration agent's tests, built offline) and
# valgrind (the instruction-count benchmark's smoke run) from Debian's packages when they are missing. Idempotent and quiet when all are present.
set -euo pipefail
need=()
command -v etcd >/dev/null 2>&1 || [ -x /usr/bin/etcd ] || need+=(etcd-server etcd-client)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v go >/dev/null 2>&1 || need+=(golang-go)
[ -d /usr/share/gocode/src/google.golang.org/grpc ] || need+=(golang-google-grpc-dev)
command -v callgrind_control >/dev/null 2>&1 || need+=(valgrind)  # benchmarks/instructions_per_call.py
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null; then
    echo "install-test-deps: need root (or sudo) to apt-get install ${need[*]}" >&2
    exit 1
  fi
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "install-test-deps: installing ${need[*]} from Debian packages"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # Do not let the packages' own services start (policy-rc.d); tests start their own on 127.0.0.1.
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null; $SUDO chmod +x /usr/sbin/policy-rc.d
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  $SUDO rm -f /usr/sbin/policy-rc.d
fi
