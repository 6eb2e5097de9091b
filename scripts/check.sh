#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The full test gate (README's `make check`, CI's .ci/run):
#   1. plain build with -Werror, suites unit + demo; suite doc: the manual
#      pages (kernel-doc with warnings as errors, a page for every exported
#      function, every page renders; doc/check-man.sh)
#   2. suite vm: the VFIO backends against real Linux kernels in QEMU guests
#      (tests/vm/run.sh; SKIP with the reason where QEMU cannot start)
#   3. unit + demo under ASan+UBSan
#   4. unit + demo under valgrind (memcheck, leaks are errors)
#   5. unit under ThreadSanitizer (no -Werror: gcc warns that it does not
#      instrument atomic_thread_fence)
#   6. (the compile-only freestanding tier is gone: the bare-metal runs of 7b
#      build, link and boot the core freestanding, and 8's layout check
#      compiles it -ffreestanding -nostdinc on the host where they skip)
#   7. cross: unit + demo built for aarch64 and riscv64 and run under
#      qemu-user, and the I/O barriers' instructions on every architecture
#      (scripts/check-cross.sh; SKIP with the reason where the toolchains
#      cannot be installed)
#   7b. baremetal: examples/baremetal booted on QEMU's aarch64 and riscv64
#      virt boards, device coherent and non-coherent (meson suite baremetal;
#      installs scripts/deps.sh baremetal as root, SKIP with the reason
#      otherwise); the core's objects alone need no symbol but mem* and hold
#      no system-call instruction
#   8. hygiene: SPDX lines (scripts/check-spdx.sh); the layout: Linux headers
#      only under src/backend and src/os, no backend includes another
#      backend's header, the core compiles -ffreestanding -nostdinc and links
#      with no symbol but mem* and no system call (scripts/layout-check.sh)
#   9. the ABI of build-check/libiodma.so against abi/libiodma.so.0.abi
#      (scripts/abi-check.sh, abidiff)
#  10. the libFuzzer targets, each for a bounded time (scripts/check-fuzz.sh)
#  11. deb: `make deb` builds libiodma0, libiodma-dev and iodma-tools with
#      dpkg-buildpackage and lintian passes them (SKIP, with the reason, when
#      the Build-Depends are missing and cannot be installed: not root, or
#      no package mirror)
# Prints one closing line "check: N passed, N failed, N skipped" over all tiers
# and exits non-zero if anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/testlog-tally.sh

scripts/deps.sh test || exit 1
rm -f build-*/meson-logs/testlog-*

suites=(--suite unit --suite demo)
jobs=$(nproc 2>/dev/null || echo 2)
failed_tiers=()

setup() { # dir, extra meson args...
	local dir=$1; shift
	scripts/setup-build.sh "$dir" -Dwerror=true -Dtests=enabled "$@" >/dev/null || return 1
	ninja -C "$dir" >/dev/null || ninja -C "$dir"
}

tier() { # name, dir, meson test args...
	local name=$1 dir=$2; shift 2
	echo "== $name"
	if ! (cd "$dir" && meson test --print-errorlogs --num-processes "$jobs" \
		--logbase "testlog-$name" "$@" | tail -n 12); then
		failed_tiers+=("$name")
	fi
}

setup build-check || failed_tiers+=("build")
tier plain build-check "${suites[@]}"
tier doc build-check --suite doc

# The guest runs print their own per-suite table; keep it in the log.
echo "== vm"
if (cd build-check && meson test --print-errorlogs --logbase testlog-vm --suite vm); then
	sed -n '/^vm: /p' build-check/meson-logs/testlog-vm.txt | tail -n 1
else
	failed_tiers+=("vm")
	tail -n 60 build-check/meson-logs/testlog-vm.txt
fi

if setup build-asan -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug \
	-Ddocs=disabled; then
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
		tier asan build-asan "${suites[@]}"
else
	failed_tiers+=("asan-build")
fi

tier valgrind build-check "${suites[@]}" --timeout-multiplier 10 \
	--wrapper 'valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect --quiet'

if scripts/setup-build.sh build-tsan -Dtests=enabled -Ddocs=disabled \
	-Db_sanitize=thread -Db_lundef=false -Dbuildtype=debug >/dev/null; then
	if ninja -C build-tsan >/dev/null 2>&1 || ninja -C build-tsan; then
		TSAN_OPTIONS=halt_on_error=1 tier tsan build-tsan --suite unit --timeout-multiplier 4
	else
		failed_tiers+=("tsan-build")
	fi
else
	failed_tiers+=("tsan-build")
fi

echo "== cross"
scripts/check-cross.sh || failed_tiers+=("cross")

scripts/deps.sh baremetal >/dev/null 2>&1 || echo "baremetal: its packages could not be installed (the suite says SKIP)"
tier baremetal build-check --suite baremetal

echo "== spdx"
scripts/check-spdx.sh || failed_tiers+=("spdx")

echo "== layout"
scripts/layout-check.sh || failed_tiers+=("layout")

echo "== abi"
scripts/abi-check.sh check build-check/libiodma.so | tail -n 40 || failed_tiers+=("abi")

echo "== fuzz"
scripts/check-fuzz.sh
fuzz_rc=$?
case $fuzz_rc in 0) fuzz_result=OK ;; 77) fuzz_result=SKIP ;; *) fuzz_result=FAIL; failed_tiers+=("fuzz") ;; esac

echo "== deb"
deb_result=SKIP
if ! deps_err=$(scripts/deps.sh deb 2>&1); then
	echo "deb: SKIP: the Build-Depends of debian/control are missing and could not be installed:"
	echo "$deps_err" | sed 's/^/  /'
elif make --no-print-directory deb >build-check/meson-logs/deb.log 2>&1; then
	deb_result=OK
	echo "deb: OK: $(cd build-deb && ls *.deb | grep -v dbgsym | tr '\n' ' ')(lintian: no error, no warning)"
else
	deb_result=FAIL
	failed_tiers+=("deb")
	tail -n 40 build-check/meson-logs/deb.log
fi

logs=()
for t in plain doc vm asan valgrind tsan cross baremetal; do
	logs+=(build-*/meson-logs/testlog-"$t".json)
done
testlog_tally check --result "$deb_result" --result "$fuzz_result" "${logs[@]}"

if [ ${#failed_tiers[@]} -ne 0 ]; then
	echo "check: FAILED tiers: ${failed_tiers[*]}" >&2
	exit 1
fi
