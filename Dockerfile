# syntax=docker/dockerfile:1

# One image, three static binaries in /usr/local/bin: worker (the default
# entrypoint), publisher and gatewaysim. Build with BuildKit:
#
#   docker build -t paystream:local .
#   docker run --rm paystream:local --help
#   docker run --rm --entrypoint publisher paystream:local --help
#
# deploy_test.go checks this file (stages, build flags, user, entrypoint).

# The Go minor version must match the go directive of go.mod (go 1.26.8). The
# golang images set GOTOOLCHAIN=local, so the image's Go must also be at least
# that patch release; the 1.26 tag follows the newest one.
FROM --platform=$BUILDPLATFORM golang:1.26-bookworm AS build
WORKDIR /src

# Modules first, so that a source change reuses this layer. The cache mount
# keeps downloaded modules across builds.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download

COPY . .

# Cross-compile for the target platform (docker buildx build --platform ...).
# Static binaries without cgo run on distroless/static; -trimpath and -s -w
# drop local paths and debug tables.
ARG TARGETOS
ARG TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags="-s -w" -o /out/ \
        ./cmd/worker ./cmd/publisher ./cmd/gatewaysim

# No shell, no package manager, CA certificates and tzdata included; runs as
# uid/gid 65532 (nonroot). Without a shell the compose file cannot give these
# containers a command healthcheck: see docker-compose.yml.
FROM gcr.io/distroless/static-debian12:nonroot AS runtime
COPY --from=build /out/worker /out/publisher /out/gatewaysim /usr/local/bin/
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 65532:65532
# The worker's HTTP server (PAYSTREAM_HTTP_ADDR): /healthz, /readyz, /metrics.
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/worker"]
