# syntax=docker/dockerfile:1
#
# make image     (or, by hand, the same build arguments:)
# docker build -t tollgate --build-arg VERSION=$(git describe --tags --always --dirty) --build-arg COMMIT=$(git rev-parse HEAD) .
# docker run --rm -p 8080:8080 -p 9090:9090 -v $PWD/tollgate.yaml:/etc/tollgate/tollgate.yaml:ro tollgate
#
# Build stage: a static binary with exactly the flags of `make build`
# (Makefile; a test compares the two). .git is not in the build context,
# so the version and commit come in as build arguments.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" -o /out/tollgate ./cmd/tollgate \
 && mkdir -p /out/data

# Runtime: distroless static has CA certificates (for https upstreams and
# Stripe), tzdata and a non-root user (uid 65532), and nothing else: no shell,
# no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/tollgate /usr/local/bin/tollgate
# The embedded store writes tollgate.db (store.path) to the working
# directory: mount a volume here to keep it (one replica only), or set
# store.redis_url. With a read-only root file system and no volume,
# tollgate refuses to start and says so.
COPY --from=build --chown=65532:65532 /out/data /var/lib/tollgate
WORKDIR /var/lib/tollgate
USER 65532:65532
# 8080: the proxy. Inside a container 127.0.0.1 is the container's own, so
#       the image listens on every interface, whatever the mounted file's
#       listen says ($TOLLGATE_LISTEN overrides it), and `docker run -p
#       8080:8080` reaches it. A sidecar sets TOLLGATE_LISTEN=127.0.0.1:8080
#       (deploy/kubernetes does), so that only its pod can spend credits.
# 9090: admin API, Stripe webhook, probes, metrics (admin.listen, ":9090").
ENV TOLLGATE_LISTEN=0.0.0.0:8080
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/tollgate"]
CMD ["serve", "--config", "/etc/tollgate/tollgate.yaml"]
