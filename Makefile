# SPDX-License-Identifier: MIT
# iodma: the two commands a newcomer needs, and the gates CI runs.
#   make demo    install what is missing (as root), build, run the end-to-end demo
#   make check   install what is missing (as root), build with -Werror, run every
#                test suite: plain, the vm suite in QEMU guests, under ASan+UBSan,
#                valgrind and ThreadSanitizer; unit + demo for aarch64 and
#                riscv64 under qemu-user; the bare-metal driver on QEMU's
#                aarch64 and riscv64 virt boards; the layout (the core
#                freestanding: scripts/layout-check.sh)
# Other targets: build, test (plain suites only), vm-test (VFIO backends in
# QEMU guests), asan, valgrind, tsan, bench (the issue-8 table of figures
# against baselines), layout (scripts/layout-check.sh: Linux code only in
# src/backend and src/os, the core compiled -ffreestanding -nostdinc, no
# symbol but mem*, no system call), cross (unit + demo on aarch64 and riscv64 under qemu-user, and the
# barrier instructions check; installs its toolchains as root),
# fuzz (a libFuzzer campaign on each fuzz target),
# doc (the manual pages, checked as make check does), deb (the Debian
# packages, lintian-checked), abi-check (abidiff against
# abi/libiodma.so.0.abi), abi-dump (regenerate that file when an ABI change
# is intended: scripts/abi-check.sh's policy), install, clean.

BUILD      ?= build
DEMO_INPUT ?= /usr/bin/perl
MESON_TEST  = meson test --print-errorlogs --num-processes 2
SUITES      = --suite unit --suite demo
DEMO        = $(BUILD)/examples/virtio-blk/virtio-blk-demo

.PHONY: all deps-build deps-test configure build demo check test vm-test asan valgrind tsan \
	bench layout cross fuzz doc deb deb-symbols abi-check abi-dump install clean

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

layout:
	scripts/layout-check.sh

# Section 3 pages by Linux's kernel-doc from the headers, iodma(1) and
# iodma-info(1) by help2man (doc/meson.build); build-check/doc/ has them.
# Read one with: man -l build-check/doc/man3/iodma_map_single.3
doc: deps-test
	@scripts/setup-build.sh build-check -Dwerror=true -Dtests=enabled
	ninja -C build-check
	cd build-check && $(MESON_TEST) --suite doc

cross:
	scripts/check-cross.sh

check:
	scripts/check.sh

# The ABI of the built libiodma.so.0 against the dump kept in abi/.
abi-check: test
	scripts/abi-check.sh check build-check/libiodma.so

# Regenerate abi/libiodma.so.0.abi from a fresh -Werror build (commit it
# with the change it records; scripts/abi-check.sh says when).
abi-dump: deps-test
	@scripts/setup-build.sh build-check -Dwerror=true -Dtests=enabled
	ninja -C build-check
	scripts/abi-check.sh dump build-check/libiodma.so

# One table (bench/run.py): each figure beside a baseline measured in the
# same run, the issue-8 target and PASS/MISS (information: exits 0 whatever
# the verdicts), and Ir/op from callgrind (valgrind is a test dependency, as
# GLib, a baseline, is).  IODMA_BENCH_IR=0 skips the callgrind pass.
bench: deps-test
	@scripts/setup-build.sh $(BUILD) -Dwerror=true
	ninja -C $(BUILD)
	python3 bench/run.py $(BUILD)/bench

# A libFuzzer campaign on each fuzz target (tests/fuzz/README.md): the
# vhost-user message stream and the domain operation stream against its
# model, FUZZ_SECONDS each; inputs that found new coverage kept in
# build-fuzz/corpus-TARGET, crashes written to build-fuzz/crash-TARGET-*.
# Needs clang with libFuzzer (a test dependency); make check runs the same
# targets for a bounded time (scripts/check-fuzz.sh) and the gcc-built
# standalone drivers in every tier.
FUZZ_SECONDS ?= 600
FUZZ_TARGETS = vhost-user domain dma
fuzz: deps-test
	CC=clang scripts/setup-build.sh build-fuzz -Dfuzzer=enabled -Dtests=enabled \
		-Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug
	ninja -C build-fuzz $(FUZZ_TARGETS:%=tests/fuzz/fuzz-%-libfuzzer)
	set -e; cd build-fuzz && for t in $(FUZZ_TARGETS); do \
		mkdir -p corpus-$$t; \
		UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
		./tests/fuzz/fuzz-$$t-libfuzzer -max_total_time=$(FUZZ_SECONDS) \
			-max_len=4096 -artifact_prefix=crash-$$t- corpus-$$t ../tests/fuzz/corpus/$$t; \
	done

# libiodma0, libiodma-dev and iodma-tools from this tree, offline once the
# Build-Depends are in (scripts/deps.sh deb installs them as root): the tree's
# files (tracked and new, as they are now) are copied to build-deb/iodma so
# the packages land in build-deb/, not beside the repository; lintian must
# then report no error and no warning.
deb:
	@scripts/deps.sh deb
	rm -rf build-deb && mkdir -p build-deb/iodma
	git ls-files -z --cached --others --exclude-standard | \
		tar --null -T - -cf - | tar -C build-deb/iodma -xf -
	cd build-deb/iodma && dpkg-buildpackage -b -us -uc
	lintian --fail-on error,warning build-deb/*.changes

# After an intended change of the exported symbols (debian/README.source):
# rewrite debian/libiodma0.symbols from the last `make deb` build.
deb-symbols:
	dpkg-gensymbols -plibiodma0 -Pbuild-deb/iodma/debian/libiodma0 \
		-v$$(cd build-deb/iodma && dpkg-parsechangelog -S Version) \
		-Idebian/libiodma0.symbols -Odebian/libiodma0.symbols.new
	{ sed -n '/^ /q;p' debian/libiodma0.symbols; grep '^ ' debian/libiodma0.symbols.new; } \
		> debian/libiodma0.symbols.tmp
	rm debian/libiodma0.symbols.new
	mv debian/libiodma0.symbols.tmp debian/libiodma0.symbols

install: build
	meson install -C $(BUILD)

clean:
	rm -rf $(BUILD) build-check build-asan build-tsan build-fuzz build-deb
