#!/usr/bin/env bash
# build.sh: the images of docker-compose.yml without a container registry
# (`make images`). Everything comes from the Go module proxy and Debian's
# packages:
#
#   $PAYSTREAM_IMAGE           worker, publisher, gatewaysim, paystreamctl:
#                              static, FROM scratch (deploy/images/paystream)
#   $PAYSTREAM_NATS_IMAGE      nats-server of go.mod, FROM scratch (deploy/images/nats)
#   $PAYSTREAM_POSTGRES_IMAGE  PostgreSQL 15 on a debootstrap'ed Debian root
#                              (deploy/images/postgres)
#
# The images are built with the legacy builder (DOCKER_BUILDKIT=0): it needs
# neither buildx nor a base image from a registry. A second run reuses the
# Go build cache, the cached Debian root and Docker's layer cache.
# Then run the stack with them:
#
#   PAYSTREAM_IMAGE=... PAYSTREAM_NATS_IMAGE=... PAYSTREAM_POSTGRES_IMAGE=... \
#     docker compose up -d --no-build
set -euo pipefail
cd "$(dirname "$0")/../.."

: "${PAYSTREAM_IMAGE:=paystream:offline}"
: "${PAYSTREAM_NATS_IMAGE:=paystream-nats:offline}"
: "${PAYSTREAM_POSTGRES_IMAGE:=paystream-postgres:offline}"
: "${GO:=go}"
stage=${IMAGES_STAGE:-.tmp/images}
export DOCKER_BUILDKIT=0

start=$(date +%s)
step() { echo "images: $* ($(( $(date +%s) - start ))s)"; }

rm -rf "$stage"
mkdir -p "$stage/paystream/bin" "$stage/paystream/etc/ssl/certs" "$stage/nats/bin" "$stage/nats/data"

# /etc for the scratch images: the non-root user 65532 (as in distroless's
# nonroot) and the CA certificates (TLS to NATS, Postgres or a gateway).
certs=/etc/ssl/certs/ca-certificates.crt
if [ ! -s "$certs" ]; then
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q ca-certificates >/dev/null
fi
etc="$stage/paystream/etc"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$etc/group"
cp "$certs" "$etc/ssl/certs/ca-certificates.crt"
cp -r "$etc" "$stage/nats/"
touch "$stage/nats/data/.keep"

step "go build (static)"
export CGO_ENABLED=0 GOOS=linux
"$GO" build -trimpath -ldflags="-s -w" -o "$stage/paystream/bin/" \
  ./cmd/worker ./cmd/publisher ./cmd/gatewaysim ./cmd/paystreamctl
"$GO" build -trimpath -ldflags="-s -w" -o "$stage/nats/bin/nats-server" github.com/nats-io/nats-server/v2
"$GO" build -trimpath -ldflags="-s -w" -o "$stage/nats/bin/wget" ./deploy/images/wget

step "docker build $PAYSTREAM_IMAGE"
docker build -q -t "$PAYSTREAM_IMAGE" -f deploy/images/paystream/Dockerfile "$stage/paystream" >/dev/null
step "docker build $PAYSTREAM_NATS_IMAGE"
docker build -q -t "$PAYSTREAM_NATS_IMAGE" -f deploy/images/nats/Dockerfile "$stage/nats" >/dev/null

base=paystream-postgres-base:15
step "postgres root $base"
deploy/images/postgres/rootfs.sh "$base"
step "docker build $PAYSTREAM_POSTGRES_IMAGE"
docker build -q -t "$PAYSTREAM_POSTGRES_IMAGE" --build-arg BASE="$base" deploy/images/postgres >/dev/null

step "done"
docker image ls --format '  {{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E "^  (${PAYSTREAM_IMAGE}|${PAYSTREAM_NATS_IMAGE}|${PAYSTREAM_POSTGRES_IMAGE})\$|offline|paystream" || true
