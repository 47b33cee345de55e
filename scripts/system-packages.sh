#!/usr/bin/env bash
# Install the Debian packages the tests and benchmarks use, when missing:
# docker-compose (validates the compose file), chromium (browser tests),
# libvips-tools (thumbnail benchmark reference), wrk and nginx (load
# benchmarks), unzip (checks export archives).
set -euo pipefail

need=()
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v chromium >/dev/null || need+=(chromium)
command -v vipsthumbnail >/dev/null || need+=(libvips-tools)
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
command -v unzip >/dev/null || need+=(unzip)
if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "warning: missing ${need[*]}; run as root to install them (tests needing them skip)" >&2
    exit 0
fi
echo "installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
