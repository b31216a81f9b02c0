#!/usr/bin/env bash
# build-tracing.sh: the two tracing images of docker-compose.yml's
# observability profile without a registry (`make images-tracing`), from the
# Go module proxy only:
#
#   $PAYSTREAM_OTELCOL_IMAGE  the OpenTelemetry Collector built from
#                             deploy/images/otelcol (a Go module of its own:
#                             collector components of one release)
#   $PAYSTREAM_JAEGER_IMAGE   Jaeger v2 (cmd/jaeger of the module
#                             github.com/jaegertracing/jaeger@$JAEGER_VERSION,
#                             built as the main module of its own source, so
#                             that its go.mod's replace directives hold)
#
# Both are static binaries in an empty image (FROM scratch, legacy builder).
# The binaries are cached under $PAYSTREAM_IMAGE_CACHE (default
# ~/.cache/paystream/images), keyed by what goes into them (the otelcol
# module's go.mod, go.sum and main.go; Jaeger's version; the Go version),
# so only the first run on a machine compiles: Jaeger, a large module, takes
# minutes there. `make images` (and so CI's compose-test) does not build
# these: only the observability profile uses them.
set -euo pipefail
cd "$(dirname "$0")/../.."

: "${PAYSTREAM_OTELCOL_IMAGE:=paystream-otelcol:offline}"
: "${PAYSTREAM_JAEGER_IMAGE:=paystream-jaeger:offline}"
: "${JAEGER_VERSION:=v1.76.0}"
# TRACING_IMAGES picks what to build: "otelcol jaeger" (both, the default),
# or one of them.
: "${TRACING_IMAGES:=otelcol jaeger}"
: "${GO:=go}"
cache=${PAYSTREAM_IMAGE_CACHE:-$HOME/.cache/paystream/images}
stage=${IMAGES_STAGE:-.tmp/images}
export DOCKER_BUILDKIT=0 CGO_ENABLED=0 GOOS=linux

start=$(date +%s)
step() { echo "images: $* ($(( $(date +%s) - start ))s)"; }

goversion=$("$GO" env GOVERSION)
mkdir -p "$cache"
rm -rf "$stage/otelcol" "$stage/jaeger"
mkdir -p "$stage/otelcol/bin" "$stage/otelcol/etc/ssl/certs" "$stage/jaeger/bin"

# /etc for the scratch images: the non-root user 65532 and CA certificates.
certs=/etc/ssl/certs/ca-certificates.crt
if [ ! -s "$certs" ]; then
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q ca-certificates >/dev/null
fi
etc="$stage/otelcol/etc"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$etc/group"
cp "$certs" "$etc/ssl/certs/ca-certificates.crt"
cp -r "$etc" "$stage/jaeger/"

want() { [[ " $TRACING_IMAGES " == *" $1 "* ]]; }

if want otelcol; then
# The collector.
key=$(cat deploy/images/otelcol/go.mod deploy/images/otelcol/go.sum deploy/images/otelcol/main.go \
  <(echo "$goversion") | sha256sum | cut -c1-12)
otelcol="$cache/otelcol-$key"
if [ ! -x "$otelcol" ]; then
  step "go build otelcol (first run on this machine)"
  (cd deploy/images/otelcol && "$GO" build -trimpath -ldflags="-s -w" -o "$otelcol.tmp" .)
  mv "$otelcol.tmp" "$otelcol"
fi
cp "$otelcol" "$stage/otelcol/bin/otelcol"
cp deploy/images/otelcol/config.yaml "$stage/otelcol/config.yaml"
step "docker build $PAYSTREAM_OTELCOL_IMAGE"
docker build -q -t "$PAYSTREAM_OTELCOL_IMAGE" -f deploy/images/otelcol/Dockerfile "$stage/otelcol" >/dev/null
fi

if want jaeger; then

# Jaeger.
jaeger="$cache/jaeger-$JAEGER_VERSION-$goversion"
if [ ! -x "$jaeger" ]; then
  step "go build jaeger $JAEGER_VERSION (first run on this machine; a few minutes)"
  dir=$(GOFLAGS=-mod=mod "$GO" mod download -json "github.com/jaegertracing/jaeger@$JAEGER_VERSION" |
    sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  [ -n "$dir" ] || { echo "images: go mod download github.com/jaegertracing/jaeger@$JAEGER_VERSION failed" >&2; exit 1; }
  src=$(mktemp -d)
  trap 'rm -rf "$src"' EXIT
  cp -r "$dir/." "$src"
  chmod -R u+w "$src"
  (cd "$src" && GOFLAGS=-mod=mod "$GO" build -trimpath -ldflags="-s -w" -o "$jaeger.tmp" ./cmd/jaeger)
  mv "$jaeger.tmp" "$jaeger"
fi
cp "$jaeger" "$stage/jaeger/bin/jaeger"
step "docker build $PAYSTREAM_JAEGER_IMAGE"
docker build -q -t "$PAYSTREAM_JAEGER_IMAGE" -f deploy/images/jaeger/Dockerfile "$stage/jaeger" >/dev/null
fi
step "done"
