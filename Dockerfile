# syntax=docker/dockerfile:1
#
# docker build -t tollgate --build-arg VERSION=$(git describe --tags --always) .
# docker run --rm -p 8080:8080 -p 9090:9090 -v $PWD/tollgate.yaml:/etc/tollgate/tollgate.yaml:ro tollgate
#
# Build stage: a static binary (CGO_ENABLED=0), the same flags as `make build`.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
      -o /out/tollgate ./cmd/tollgate \
 && mkdir -p /out/data

# Runtime: distroless static has CA certificates (for https upstreams and
# Stripe), tzdata and a non-root user (uid 65532), and nothing else: no shell,
# no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/tollgate /usr/local/bin/tollgate
# The embedded store writes tollgate.db to the working directory; mount a
# volume here to keep it (single replica), or set store.redis_url.
COPY --from=build --chown=65532:65532 /out/data /var/lib/tollgate
WORKDIR /var/lib/tollgate
USER 65532:65532
# 8080: the proxy. Containers of one pod share 127.0.0.1, so the default
#       listen address (127.0.0.1:8080) serves a sidecar; set listen to
#       0.0.0.0:8080 only when the app runs elsewhere.
# 9090: admin API, Stripe webhook, probes, metrics.
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/tollgate"]
CMD ["serve", "--config", "/etc/tollgate/tollgate.yaml"]
