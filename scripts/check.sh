#!/usr/bin/env bash
# The full test gate (README's `make check`, CI's .ci/run):
#   1. plain build with -Werror, suites unit + demo
#   2. suite vm: the VFIO backends against real Linux kernels in QEMU guests
#      (tests/vm/run.sh; SKIP with the reason where QEMU cannot start)
#   3. unit + demo under ASan+UBSan
#   4. unit + demo under valgrind (memcheck, leaks are errors)
#   5. unit under ThreadSanitizer (no -Werror: gcc warns that it does not
#      instrument atomic_thread_fence)
#   6. the core compiled freestanding
#   7. the layout: Linux headers only under src/backend and src/os, no
#      backend includes another backend's header (scripts/layout-check.sh)
# Prints one closing line "check: N passed, N failed, N skipped" over all tiers
# and exits non-zero if anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."

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

# The guest runs print their own per-suite table; keep it in the log.
echo "== vm"
if (cd build-check && meson test --print-errorlogs --logbase testlog-vm --suite vm); then
	sed -n '/^vm: /p' build-check/meson-logs/testlog-vm.txt | tail -n 1
else
	failed_tiers+=("vm")
	tail -n 60 build-check/meson-logs/testlog-vm.txt
fi

if setup build-asan -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug; then
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
		tier asan build-asan "${suites[@]}"
else
	failed_tiers+=("asan-build")
fi

tier valgrind build-check "${suites[@]}" --timeout-multiplier 10 \
	--wrapper 'valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect --quiet'

if scripts/setup-build.sh build-tsan -Dtests=enabled \
	-Db_sanitize=thread -Db_lundef=false -Dbuildtype=debug >/dev/null; then
	if ninja -C build-tsan >/dev/null 2>&1 || ninja -C build-tsan; then
		TSAN_OPTIONS=halt_on_error=1 tier tsan build-tsan --suite unit --timeout-multiplier 4
	else
		failed_tiers+=("tsan-build")
	fi
else
	failed_tiers+=("tsan-build")
fi

echo "== freestanding"
scripts/freestanding-check.sh || failed_tiers+=("freestanding")

echo "== layout"
scripts/layout-check.sh || failed_tiers+=("layout")

python3 - "$@" <<'PY'
import json, glob
p = f = s = 0
for tier in ("plain", "vm", "asan", "valgrind", "tsan"):
  for path in glob.glob(f"build-*/meson-logs/testlog-{tier}.json"):
    for line in open(path):
        line = line.strip()
        if not line:
            continue
        r = json.loads(line).get("result")
        if r in ("OK", "EXPECTEDFAIL"):
            p += 1
        elif r == "SKIP":
            s += 1
        else:
            f += 1
print(f"check: {p} passed, {f} failed, {s} skipped")
PY

if [ ${#failed_tiers[@]} -ne 0 ]; then
	echo "check: FAILED tiers: ${failed_tiers[*]}" >&2
	exit 1
fi
