#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The libFuzzer tier of `make check`: builds the fuzz targets of tests/fuzz
# with clang, libFuzzer and ASan+UBSan (build-fuzz/, -Dfuzzer=enabled: the
# library is instrumented for coverage), and runs each for a bounded time
# from the seed corpus in the tree, with coverage feedback.  Inputs that
# found new coverage go to a scratch corpus (the tree is not written);
# a crash is kept as build-fuzz/crash-TARGET-* and fails the tier.
#   IODMA_FUZZ_CI_SECONDS  seconds per target (default 30)
# Exit 0, 1, or 77 when clang with libFuzzer is missing (scripts/deps.sh
# test installs clang and libclang-rt-14-dev).
set -uo pipefail
cd "$(dirname "$0")/.."

secs=${IODMA_FUZZ_CI_SECONDS:-30}
targets=(vhost-user domain dma)
command -v clang >/dev/null || { echo "fuzz: SKIP: no clang"; exit 77; }
echo 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }' |
	clang -x c -fsanitize=fuzzer -o /dev/null - 2>/dev/null ||
	{ echo "fuzz: SKIP: clang cannot link libFuzzer (libclang-rt-14-dev)"; exit 77; }

CC=clang scripts/setup-build.sh build-fuzz -Dfuzzer=enabled -Dtests=enabled \
	-Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug >/dev/null || exit 1
ninja -C build-fuzz "${targets[@]/#/tests/fuzz/fuzz-}" >/dev/null 2>&1 ||
	ninja -C build-fuzz "${targets[@]/#/tests/fuzz/fuzz-}" || exit 1
ninja -C build-fuzz $(printf 'tests/fuzz/fuzz-%s-libfuzzer ' "${targets[@]}") >/dev/null 2>&1 ||
	ninja -C build-fuzz $(printf 'tests/fuzz/fuzz-%s-libfuzzer ' "${targets[@]}") || exit 1

fail=0
for t in "${targets[@]}"; do
	scratch=$(mktemp -d)
	log=build-fuzz/meson-logs/fuzz-$t.log
	mkdir -p build-fuzz/meson-logs
	if (cd build-fuzz && UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		ASAN_OPTIONS=detect_leaks=1 "./tests/fuzz/fuzz-$t-libfuzzer" \
		-max_total_time="$secs" -max_len=4096 -print_final_stats=1 \
		-artifact_prefix="crash-$t-" "$scratch" "../tests/fuzz/corpus/$t") >"$log" 2>&1; then
		runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
		cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
		echo "fuzz: $t: ${runs:-?} inputs in ${secs} s, $cov, corpus $(ls "$scratch" | wc -l) new"
	else
		echo "fuzz: $t: FAILED (log: $log, crash input: build-fuzz/crash-$t-*)"
		tail -n 40 "$log"
		fail=1
	fi
	rm -rf "$scratch"
done
exit $fail
