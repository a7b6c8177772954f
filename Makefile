# spirepod — build, test bed and tests.
#
#   make build     bin/spirepod
#   make testbin   build the real test-bed components that are missing (cached by version)
#   make test      testbin + the whole suite (unit, testscript, test bed, end to end)
#   make test-short  fast inner loop: no test bed

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
TESTBIN   := $(shell hack/testbin.sh --print)
GOTESTFLAGS ?= -timeout 60m

export GOFLAGS ?= -buildvcs=false

.PHONY: build testbin test test-short vet lint bench

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/spirepod ./cmd/spirepod

testbin:
	hack/packages.sh
	hack/testbin.sh

test: testbin vet
	SPIREPOD_TESTBIN=$(TESTBIN) SPIREPOD_REQUIRE_TESTBED=1 $(GO) test $(GOTESTFLAGS) ./...

test-short:
	$(GO) test -short ./...

vet:
	$(GO) vet ./...

lint: vet
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

bench: build
	bench/init.sh
