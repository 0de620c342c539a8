# make test is the one test command: vet, then every test with the race
# detector. Redis-backed tests start their own redis-server from PATH, and
# the Stripe API client tests stripe-mock; without them they skip, and
# make test ends with one line saying which and how to install what they
# need (internal/testdeps/summary). With CI=true they fail instead.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
# The same flags as the Dockerfile: a static, stripped, reproducible binary.
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)

IMAGE   ?= tollgate

.PHONY: test vet build image fmt

# go test's exit status is make test's; the summary comes after it either way.
test: vet
	@echo "$(GO) test -race ./..."; status=0; $(GO) test -race ./... || status=$$?; \
	$(GO) run ./internal/testdeps/summary; exit $$status

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
