# iodma: the two commands a newcomer needs, and the gates CI runs.
#   make demo    install what is missing (as root), build, run the end-to-end demo
#   make check   install what is missing (as root), build with -Werror, run every
#                test suite: plain, the vm suite in QEMU guests, under ASan+UBSan,
#                valgrind and ThreadSanitizer; compile the core freestanding;
#                unit + demo for aarch64 and riscv64 under qemu-user
# Other targets: build, test (plain suites only), vm-test (VFIO backends in
# QEMU guests), asan, valgrind, tsan, bench (the issue-8 table of figures
# against baselines), freestanding (compile the core with -ffreestanding),
# cross (unit + demo on aarch64 and riscv64 under qemu-user, and the
# barrier instructions check; installs its toolchains as root),
# fuzz (a libFuzzer campaign on the vhost-user target, clang only),
# install, clean.

BUILD      ?= build
DEMO_INPUT ?= /usr/bin/perl
MESON_TEST  = meson test --print-errorlogs --num-processes 2
SUITES      = --suite unit --suite demo
DEMO        = $(BUILD)/examples/virtio-blk/virtio-blk-demo

.PHONY: all deps-build deps-test configure build demo check test vm-test asan valgrind tsan \
	bench freestanding cross fuzz install clean

all: build

deps-build:
	@scripts/deps.sh build

deps-test:
	@scripts/deps.sh test

# scripts/setup-build.sh configures a tree, and reconfigures it when the
# installed dependencies changed (make check installed cmocka after make demo
# configured build/), so no order of the README commands breaks a tree.
configure: deps-build
	@scripts/setup-build.sh $(BUILD) -Dwerror=true

build: configure
	ninja -C $(BUILD)

# The demo builds only what it runs.
demo: configure
	ninja -C $(BUILD) $(patsubst $(BUILD)/%,%,$(DEMO))
	@echo "== virtio-blk demo: $(DEMO_INPUT) through the soft IOMMU (bounce when needed)"
	$(DEMO) $(DEMO_INPUT)
	@echo "== the same with bounce policy 'always' (confidential-VM style sharing)"
	$(DEMO) --bounce=always $(DEMO_INPUT)

test: deps-test
	@scripts/setup-build.sh build-check -Dwerror=true -Dtests=enabled
	ninja -C build-check
	cd build-check && $(MESON_TEST) $(SUITES)

# Real-kernel tests in QEMU guests (Debian's 6.12 kernel and a minimal 6.12
# with iommufd, each under intel-iommu and virtio-iommu).  The first run
# fetches and builds the kernels into ~/.cache/iodma-vm (about 5 minutes).
vm-test: deps-test
	@scripts/setup-build.sh build-check -Dwerror=true -Dtests=enabled
	ninja -C build-check
	cd build-check && meson test --print-errorlogs --suite vm --verbose

asan: deps-test
	@scripts/setup-build.sh build-asan -Dwerror=true -Dtests=enabled \
		-Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug
	ninja -C build-asan
	cd build-asan && UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		ASAN_OPTIONS=detect_leaks=1 $(MESON_TEST) $(SUITES)

valgrind: test
	cd build-check && $(MESON_TEST) $(SUITES) --timeout-multiplier 10 \
		--wrapper 'valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect --quiet'

tsan: deps-test
	@scripts/setup-build.sh build-tsan -Dtests=enabled \
		-Db_sanitize=thread -Db_lundef=false -Dbuildtype=debug
	ninja -C build-tsan
	cd build-tsan && $(MESON_TEST) --suite unit

freestanding:
	scripts/freestanding-check.sh

cross:
	scripts/check-cross.sh

check:
	scripts/check.sh

# One table (bench/run.py): each figure beside a baseline measured in the
# same run, the issue-8 target and PASS/MISS (information: exits 0 whatever
# the verdicts), and Ir/op from callgrind (valgrind is a test dependency, as
# GLib, a baseline, is).  IODMA_BENCH_IR=0 skips the callgrind pass.
bench: deps-test
	@scripts/setup-build.sh $(BUILD) -Dwerror=true
	ninja -C $(BUILD)
	python3 bench/run.py $(BUILD)/bench

# A libFuzzer campaign on the vhost-user message parser (tests/fuzz/README.md):
# FUZZ_SECONDS long, inputs that found new coverage kept in build-fuzz/corpus,
# crashes written to build-fuzz/crash-*.  Needs clang with libFuzzer; without
# it, says so and does nothing (make check runs the gcc-built bounded driver).
FUZZ_SECONDS ?= 600
fuzz: deps-test
	@if ! command -v clang >/dev/null 2>&1; then \
		echo "fuzz: skipped: no clang (the bounded driver runs in make check)"; exit 0; fi; \
	CC=clang scripts/setup-build.sh build-fuzz -Dfuzzer=enabled -Dtests=enabled \
		-Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug && \
	ninja -C build-fuzz tests/fuzz/fuzz-vhost-user-libfuzzer && \
	mkdir -p build-fuzz/corpus && cd build-fuzz && \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
	./tests/fuzz/fuzz-vhost-user-libfuzzer -max_total_time=$(FUZZ_SECONDS) \
		-max_len=4096 -artifact_prefix=crash- corpus ../tests/fuzz/corpus/vhost-user

install: build
	meson install -C $(BUILD)

clean:
	rm -rf $(BUILD) build-check build-asan build-tsan build-fuzz
