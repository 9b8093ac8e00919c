#!/usr/bin/env bash
# Installs (Debian's docker.io, debootstrap) and starts the Docker daemon the image targets need, if it is not
# running: no bridge network and no iptables rules (containers use --network host or none; never a bridge
# on a private range), overlay2, log in .build/dockerd.log. Idempotent: `make image` and .ci/run call it.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
missing=$(for p in docker.io debootstrap; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || echo "$p"; done)
if [ -n "$missing" ]; then
  echo "docker: installing" $missing
  $SUDO apt-get update -q >/dev/null
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >/dev/null
fi
if docker info >/dev/null 2>&1; then
  exit 0
fi
mkdir -p .build
echo "docker: starting dockerd --bridge=none --iptables=false (log: .build/dockerd.log)"
$SUDO sh -c 'nohup dockerd --bridge=none --iptables=false --ip6tables=false > "$1" 2>&1 &' sh "$PWD/.build/dockerd.log"
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 1
done
echo "docker: dockerd did not come up; .build/dockerd.log:" >&2
tail -n 30 .build/dockerd.log >&2
exit 1
