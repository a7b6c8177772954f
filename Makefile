# spirepod — build, test bed and tests.
#
#   make build     bin/spirepod
#   make testbin   build the real test-bed components that are missing (cached by version)
#   make test      testbin + the whole suite (unit, testscript, test bed, end to end)
#   make test-short  fast inner loop: no test bed
#   make bed       the standing test bed in the background (hack/bed.sh): prints its
#                  env lines; `eval "$(hack/bed.sh env)"` and the tests reuse it
#   make bed-stop  stop it (no process is left)

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
TESTBIN   := $(shell hack/testbin.sh --print)
# -parallel 4: the end-to-end tests mostly wait on real components (agent
# syncs, renewals, rollouts), so four at a time fit two cores. -p 3: e2e
# takes one slot for its whole run; two more keep the other packages from
# queueing behind each other (bench/suite.sh measures both).
GOTESTFLAGS ?= -timeout 60m -p 3 -parallel 4
# Extra flags for one run, e.g. TESTFLAGS='-count=1 -json' (bench/suite.sh).
TESTFLAGS ?=

export GOFLAGS ?= -buildvcs=false

# Tests, vet and the binaries tests build are cgo-free, as `make build` is:
# the test binaries then link internally (with cgo, kustomize's import of
# package plugin forces an external gcc link: 43 s of CPU for test-short's
# links instead of 20 s). hack/testbin.sh keeps its own setting.
NOCGO := CGO_ENABLED=0

.PHONY: build testbin test test-short vet lint bench bed bed-stop

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/spirepod ./cmd/spirepod

testbin:
	hack/packages.sh
	hack/testbin.sh

test: testbin vet
	$(NOCGO) SPIREPOD_TESTBIN=$(TESTBIN) SPIREPOD_REQUIRE_TESTBED=1 $(GO) test $(GOTESTFLAGS) $(TESTFLAGS) ./...

# e2e and bench hold only test-bed tests (every one skips under -short):
# test-short type-checks them with vet instead of linking two of the
# largest test binaries for nothing (about 12 s of CPU on 2 cores).
BEDONLY := ./e2e ./bench

# test-short links its test binaries and runs its tests in /dev/shm when
# that tmpfs has 2 GiB free (20 test binaries of up to 100 MB each are
# written and executed per run: on disk that cost 4 s more system CPU and
# 4 s of wall time, bench/suite.sh --short); elsewhere in $TMPDIR as usual.
SHORTTMP = $(shell d=/dev/shm; [ -d $$d ] && [ -w $$d ] && \
	[ "$$(df -Pk $$d 2>/dev/null | awk 'NR==2 {print $$4}')" -ge 2097152 ] 2>/dev/null && echo $$d)

# The packages whose short tests run longest go first (go test starts the
# packages in the order given): the short ones then fill the gaps instead
# of the long ones making a tail (25 s instead of 28 s for the go test).
SHORTFIRST := ./cmd/spirepod ./internal/scaffold ./internal/rotate ./internal/city ./internal/pki ./internal/apply ./internal/pr

test-short:
	$(NOCGO) $(GO) vet $(BEDONLY)
	$(if $(SHORTTMP),GOTMPDIR=$(SHORTTMP) TMPDIR=$(SHORTTMP)) $(NOCGO) $(GO) test -short $(GOTESTFLAGS) $(TESTFLAGS) $$($(GO) list $(SHORTFIRST) ./... | grep -v -x -e '.*/e2e' -e '.*/bench')

bed: testbin
	hack/bed.sh start

bed-stop:
	hack/bed.sh stop

vet:
	$(NOCGO) $(GO) vet ./...

lint: vet
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

bench: build
	bench/init.sh
