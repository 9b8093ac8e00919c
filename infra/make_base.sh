#!/usr/bin/env bash
# Builds the local stand-in for the image's base (Debian 12 "bookworm", the release the tests and CI run on):
# debootstrap of the same Debian release, minbase variant, with the apt sources (bookworm, bookworm-updates,
# bookworm-security) and the documentation excludes of Docker's debian:bookworm-slim, turned into an image
# with `docker import`. It is tagged as what it is (docvision-base/debian:bookworm-standin), never as the
# official image; `make image` passes it as the build arg LAMBDA_BASE. Where a registry is reachable, build
# from the official public.ecr.aws/docker/library/debian:bookworm-slim instead (Dockerfile.lambda's default).
#
#   infra/make_base.sh                 # → docvision-base/debian:bookworm-standin (kept if it exists)
#   FORCE=1 infra/make_base.sh         # rebuild (new security updates)
set -euo pipefail
SUITE=${SUITE:-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
TAG=${BASE_TAG:-docvision-base/debian:${SUITE}-standin}

if [ -z "${FORCE:-}" ] && docker image inspect "$TAG" >/dev/null 2>&1; then
  echo "base: $TAG exists ($(docker image inspect -f '{{.Created}}' "$TAG")); FORCE=1 rebuilds it"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "base: debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }
root=$(mktemp -d /var/tmp/docvision-base.XXXXXX)
trap 'rm -rf "$root"' EXIT

# What debian:*-slim does: no man pages, info, docs (copyright files kept) or locales in any later layer.
mkdir -p "$root/etc/dpkg/dpkg.cfg.d"
cat > "$root/etc/dpkg/dpkg.cfg.d/docker" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
CFG
debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR"

rm -f "$root/etc/apt/sources.list"
cat > "$root/etc/apt/sources.list.d/debian.sources" <<SRC
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
# No recommends and no apt lists in the image (debian:*-slim's apt configuration).
cat > "$root/etc/apt/apt.conf.d/docker-clean" <<'CFG'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CFG
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
  "$root"/var/log/*.log "$root"/tmp/* "$root"/proc/* "$root"/sys/* "$root"/dev/*
echo -n > "$root/etc/machine-id"

version=$(cat "$root/etc/debian_version")
tar --numeric-owner -C "$root" -c . | docker import \
  --change 'CMD ["bash"]' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change "LABEL org.opencontainers.image.title=docvision-base-standin" \
  --change "LABEL org.opencontainers.image.description=\"Local stand-in for debian:${SUITE}-slim (debootstrap ${SUITE} ${version}, minbase); not the official image\"" \
  --change "LABEL org.opencontainers.image.version=${version}" \
  - "$TAG" >/dev/null
echo "base: $TAG built (Debian $version, $(docker image inspect -f '{{.Size}}' "$TAG") bytes)"
