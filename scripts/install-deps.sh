#!/usr/bin/env bash
# Installs the Debian 12 packages klaxon needs to build, test and run its demo.
# Idempotent: does nothing when everything is present; runs `apt-get update` only when
# a package is missing. Needs root (or sudo) only when something must be installed.
set -euo pipefail

PKGS=(
    build-essential cmake pkg-config
    librdkafka-dev libpcre2-dev libjansson-dev libhiredis-dev libev-dev libyaml-dev
    libcurl4-openssl-dev libmicrohttpd-dev libcmocka-dev zlib1g-dev libssl-dev
    redis-server tzdata python3 curl cppcheck
    # TLS to Redis (hiredis 0.14 has none): stunnel on loopback, and openssl for the tests'
    # certificates (docs/scaling.md, "Redis in production").
    stunnel4 openssl
    # The fuzz targets (make fuzz, run briefly by make test): clang, libFuzzer's runtime,
    # and llvm-symbolizer so sanitizer reports name functions and lines.
    clang libclang-rt-14-dev llvm
)
# Hyperscan where Debian builds it (amd64), Vectorscan (the same API and pkg-config name) on
# the other architectures: the prefilter's multi-pattern matcher and the linear-time engine
# for regular expressions.
if [ "$(dpkg --print-architecture)" = amd64 ]; then
    PKGS+=(libhyperscan-dev)
else
    PKGS+=(libvectorscan-dev)
fi

missing=()
for p in "${PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
