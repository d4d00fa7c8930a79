# runsc-guard: a containerd shim that makes pod memory limits hold for gVisor.

BINARY   := containerd-shim-runsc-guard-v1
BINDIR   ?= bin
PREFIX   ?= /usr/local
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
GO       ?= go
LDFLAGS  := -s -w -X main.version=$(VERSION)
SCENARIOS ?=

.DEFAULT_GOAL := build

.PHONY: help
help: ## show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## build the static shim binary into bin/
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BINDIR)/$(BINARY) ./cmd/$(BINARY)

.PHONY: test
test: ## run the unit tests (no root, VM or systemd needed), then the in-process ones again under the race detector
	$(GO) vet ./...
	$(GO) test -count=1 ./...
	$(GO) test -count=1 -race -short ./proxy ./sandboxfix ./cgroupfix ./runsc

.PHONY: bench
bench: ## run the benchmarks
	$(GO) test -run '^$$' -bench . -benchmem ./...

.PHONY: integration
integration: build ## run the VM test bed (real systemd, containerd, runsc); SCENARIOS=... selects
	SCENARIOS="$(SCENARIOS)" bash integration/run.sh

.PHONY: demo
demo: build ## boot the VM and print the RED/GREEN table of the seed's incident
	SCENARIOS=red,green bash integration/run.sh

.PHONY: install
install: build ## install the binary into $(PREFIX)/bin (use install.sh to switch containerd over)
	install -D -m 0755 $(BINDIR)/$(BINARY) $(DESTDIR)$(PREFIX)/bin/$(BINARY)

.PHONY: clean
clean: ## remove build output
	rm -rf $(BINDIR)
