#!/usr/bin/env bash
# compose-v2.sh: print the Docker Compose v2 command to use. `docker compose`
# when the engine's CLI has the plugin; otherwise a standalone
# docker-compose v2 built from the Go module proxy (module
# github.com/docker/compose/v2, COMPOSE_VERSION) and cached under
# ~/.cache/paystream/compose. Debian's docker-compose 1.29 does not do:
# compose-test needs `up --wait`, `name:` and service_completed_successfully.
# The first build takes a few minutes; later runs only print the path.
set -euo pipefail
version=${COMPOSE_VERSION:-v2.35.1}
cache=${COMPOSE_CACHE:-$HOME/.cache/paystream/compose}
bin="$cache/docker-compose-$version"

if [ -z "${COMPOSE_FORCE_BUILD:-}" ] && docker compose version >/dev/null 2>&1; then
  echo "docker compose"
  exit 0
fi
if [ ! -x "$bin" ]; then
  start=$(date +%s)
  echo "compose: building docker compose $version from the Go module proxy (first run only)" >&2
  go=${GO:-go}
  dir=$(GOFLAGS=-mod=mod "$go" mod download -json "github.com/docker/compose/v2@$version" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  [ -n "$dir" ] || { echo "compose: go mod download github.com/docker/compose/v2@$version failed" >&2; exit 1; }
  src=$(mktemp -d)
  trap 'rm -rf "$src"' EXIT
  # Built as the main module, so that its go.mod's replace and exclude
  # directives hold (go install pkg@version refuses them).
  cp -r "$dir/." "$src"
  chmod -R u+w "$src"
  mkdir -p "$cache"
  (cd "$src" && CGO_ENABLED=0 GOFLAGS=-mod=mod "$go" build -trimpath \
    -ldflags="-s -w -X github.com/docker/compose/v2/internal.Version=$version" -o "$bin.tmp" ./cmd) >&2
  mv "$bin.tmp" "$bin"
  echo "compose: built $bin in $(( $(date +%s) - start ))s" >&2
fi
echo "$bin"
