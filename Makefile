# make test is the one test command: vet, then every test with the race
# detector. Redis-backed tests start their own redis-server from PATH; with
# CI=true they fail instead of skipping when it is missing.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
# The same flags as the Dockerfile: a static, stripped, reproducible binary.
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)

IMAGE   ?= tollgate

.PHONY: test vet build image fmt

test: vet
	$(GO) test -race ./...

vet:
	$(GO) vet ./...

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/tollgate ./cmd/tollgate

# The container image, stamped with the version and commit make build
# uses: .git is not in the build context, so they come as build arguments.
image:
	docker build -t $(IMAGE) --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) .

fmt:
	gofmt -w .
