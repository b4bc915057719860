# netd: `sudo make demo` runs the example stack, `sudo make test` runs every test.
CARGO ?= cargo
STACK ?= examples/voting-app.toml

.PHONY: all deps build release demo demo-cluster test unit integration check bench fmt clippy clean install-cni bench-cni

all: build

deps:
	./scripts/install-deps.sh

build: deps
	$(CARGO) build --workspace --bins

release: deps
	$(CARGO) build --release --workspace --bins

# Brings the voting-app stack up on this host (embedded store under /var/lib/netd),
# prints the measured reachability table and waits for Ctrl-C, then removes everything.
demo: release
	./target/release/netd up $(STACK)

# The voting app's tiers on 3 hosts of a lab (LAB=nddemo) over overlay networks: prints
# who reaches whom by name, exits non-zero when a pair is not as expected, removes the lab
# (KEEP=1 leaves it up). scripts/demo-cluster.sh.
demo-cluster: build
	./scripts/demo-cluster.sh

# Unit tests (no root needed), then as root the integration tests on real namespaces and
# the VM lane's (docs/testing.md); the last line counts them all. CI: .ci/run, which sets
# NETD_TEST_REQUIRE=1 (a test that would skip fails).
test: build
	./scripts/test.sh

unit:
	$(CARGO) test --workspace --lib --bins

check:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

bench: release
	./bench/attach.sh 200
	./bench/docker.sh 50
	./bench/cni.sh 100
	./bench/dns.sh 1000 8
	./bench/macvlan.sh 200
	./bench/services.sh
	./bench/services.sh datapath
	./bench/wireguard.sh

# The CNI plugin (statically linked, scripts/build-cni.sh): binary to /opt/cni/bin, example conflist to /etc/cni/net.d (an existing
# one is kept). DESTDIR stages the install elsewhere.
install-cni: deps
	install -D -m 0755 "$$(./scripts/build-cni.sh)" $(DESTDIR)/opt/cni/bin/netd-cni
	[ -e $(DESTDIR)/etc/cni/net.d/10-netd.conflist ] || \
	  install -D -m 0644 cni-plugin/examples/10-netd.conflist $(DESTDIR)/etc/cni/net.d/10-netd.conflist

bench-cni: release
	./bench/cni.sh 100

clean:
	$(CARGO) clean
