# make test is the one test command: vet, then every test with the race
# detector. Redis-backed tests start their own redis-server from PATH; with
# CI=true they fail instead of skipping when it is missing.
GO ?= go

.PHONY: test vet build fmt bench fuzz

test: vet
	$(GO) test -race ./...

vet:
	$(GO) vet ./...

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o bin/tollgate ./cmd/tollgate

fmt:
	gofmt -w .
