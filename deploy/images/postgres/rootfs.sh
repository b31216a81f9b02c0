#!/usr/bin/env bash
# rootfs.sh TAG: make sure the Docker image TAG holds a Debian bookworm root
# with PostgreSQL 15, built without a registry: debootstrap fetches Debian's
# packages, `docker import` turns the root into an image. The root is cached
# as a tarball (PAYSTREAM_IMAGE_CACHE, default ~/.cache/paystream/images), so
# only the first run on a machine downloads anything; a later one only
# imports the tarball (and nothing at all while the image exists).
#
# Run by `make images` (as root: debootstrap needs it). deploy/images/postgres/
# Dockerfile builds the runnable image on top of TAG.
set -euo pipefail

tag=${1:?usage: rootfs.sh IMAGE_TAG}
suite=${DEBIAN_SUITE:-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
cache=${PAYSTREAM_IMAGE_CACHE:-$HOME/.cache/paystream/images}
# The name changes with what goes into the root, so a changed recipe is not
# served from an old tarball.
recipe="minbase $suite postgresql-15 v2"
tarball="$cache/postgres-rootfs-$(printf '%s' "$recipe" | sha256sum | cut -c1-12).tar"

if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "images: $tag exists"
  exit 0
fi

if [ ! -s "$tarball" ]; then
  if ! command -v debootstrap >/dev/null 2>&1; then
    echo "images: installing debootstrap"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
  fi
  mkdir -p "$cache"
  root=$(mktemp -d "$cache/rootfs.XXXXXX")
  trap 'rm -rf "$root"' EXIT
  echo "images: debootstrap $suite with postgresql-15 into $root (first run only; a few minutes)"
  start=$(date +%s)
  debootstrap --variant=minbase --include=postgresql-15 "$suite" "$root" "$mirror" >"$root.log" 2>&1 || {
    tail -30 "$root.log" >&2
    exit 1
  }
  rm -f "$root.log"
  # The package's postinst made a cluster "main"; the image makes its own
  # at first start (deploy/images/postgres/entrypoint.sh). Drop it, the
  # package cache and the lists.
  rm -rf "$root/var/lib/postgresql/15" "$root/etc/postgresql/15" \
    "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/*
  # The data directory (a fresh named volume mounted there takes its owner
  # and mode) and the socket directory, owned by the server's user.
  mkdir -p "$root/var/lib/postgresql/data" "$root/run/postgresql"
  chroot "$root" chown postgres:postgres /var/lib/postgresql/data /run/postgresql
  chmod 700 "$root/var/lib/postgresql/data"
  tar --numeric-owner -C "$root" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  echo "images: root cached in $tarball ($(du -h "$tarball" | cut -f1)) after $(( $(date +%s) - start ))s"
fi

# The image's settings come with the import: the legacy builder turns each
# Dockerfile instruction into a container and a commit, which costs seconds
# per instruction on a 400 MB root. deploy/images/postgres/Dockerfile only
# adds the entrypoint.
docker import \
  --change 'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV PGDATA=/var/lib/postgresql/data' \
  --change 'EXPOSE 5432' \
  --change 'USER postgres' \
  --change 'ENTRYPOINT ["/usr/local/bin/paystream-postgres"]' \
  "$tarball" "$tag" >/dev/null
echo "images: imported $tag from $tarball"
