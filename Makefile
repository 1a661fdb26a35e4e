# Convey: the two operator commands are `make demo` (the main job) and `make test`.
SHELL := /bin/bash
SWIFT ?= swift
export PATH := /opt/swift/usr/bin:$(PATH)

# Debian packages the build, the tests, the demo and the benchmarks need.
DEPS_BUILD := libxdp-dev libbpf-dev pkg-config
DEPS_LAB   := iproute2 ethtool curl python3 nftables procps systemd haproxy
DEPS_BENCH := haproxy nginx-light libnginx-mod-stream iperf3 nftables python3-matplotlib gcc libc6-dev valgrind binutils

.PHONY: all build release deps deps-bench test demo bench install uninstall clean

# Where `make install` puts convey (DESTDIR stages the whole tree elsewhere, for packaging).
PREFIX ?= /usr/local
DESTDIR ?=
BINDIR := $(PREFIX)/bin
DOCDIR := $(PREFIX)/share/doc/convey
UNITDIR ?= /etc/systemd/system

all: build

## deps: install what a fresh Debian machine lacks (apt; needs root)
deps:
	@missing=$$(for p in $(DEPS_BUILD) $(DEPS_LAB); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

deps-bench: deps
	@missing=$$(for p in $(DEPS_BENCH); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release

## test: every test, unit and lab (the lab tests need root; in CI they must not skip)
# Serial: several tests count process-wide descriptors or build namespace labs, which
# parallel tests in the same process would disturb.
test: deps
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build --no-parallel

## demo: convey in proxy mode on loopback in front of two local backends, with live stats;
## then (as root) DSR and passthrough over AF_XDP in a network-namespace lab
demo: release
	./demo/proxy-demo.sh
	./demo/lab-demo.sh

## bench: measurements against their anchors (BENCH_QUICK=1 for a short run; root for the
## proxy and AF_XDP benchmarks, which build network-namespace labs)
bench: deps-bench
	$(SWIFT) build -c release --product convey
	$(SWIFT) build -c release --product ConveyBench
	$(SWIFT) build -c release --product XSKReflect
	./bench/build-tools.sh
	./bench/run.sh

## install: the binary, a systemd unit, /etc/default/convey and an example
## /etc/convey/convey.toml (the last two only if absent: an operator's files are kept)
install: release
	install -D -m 0755 .build/release/convey $(DESTDIR)$(BINDIR)/convey
	install -D -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md
	mkdir -p $(DESTDIR)$(UNITDIR)
	sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@DOCDIR@|$(DOCDIR)|g' dist/convey.service > $(DESTDIR)$(UNITDIR)/convey.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/convey.service
	[ -e $(DESTDIR)/etc/default/convey ] || install -D -m 0644 dist/convey.default $(DESTDIR)/etc/default/convey
	[ -e $(DESTDIR)/etc/convey/convey.toml ] || install -D -m 0644 examples/proxy.toml $(DESTDIR)/etc/convey/convey.toml
	@echo "installed. Next: edit /etc/convey/convey.toml (and the mode in /etc/default/convey), then"
	@echo "  convey --check --config /etc/convey/convey.toml && systemctl daemon-reload && systemctl enable --now convey"

## uninstall: removes what install put in place but the configuration files
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/convey $(DESTDIR)$(UNITDIR)/convey.service
	rm -rf $(DESTDIR)$(DOCDIR)

clean:
	rm -rf .build
