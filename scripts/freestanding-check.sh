#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Proves the core builds for bare metal: every core source, the soft backend
# and the freestanding platform layer compile with -ffreestanding -nostdinc,
# seeing only the compiler's own headers (stdint, stddef, stdbool, stdatomic)
# and three tiny shims (errno values, memcpy & co, assert).  A core file that
# includes an OS header or calls the OS fails here.  Then the objects are
# linked together with -nostdlib into one relocatable object, and any
# undefined symbol other than the four mem* functions (and the linker-made
# _GLOBAL_OFFSET_TABLE_) fails the check.
set -euo pipefail
cd "$(dirname "$0")/.."
CC=${CC:-gcc}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
core=(src/util.c src/btree.c src/iopt.c src/iova.c src/domain.c src/xlate.c src/memory.c
      src/regmap.c src/bounce.c src/dma.c src/cache.c src/backend/soft.c
      src/os/freestanding.c)
objs=()
for f in "${core[@]}"; do
	[ -f "$f" ] || { echo "freestanding: missing $f" >&2; exit 1; }
	o="$out/$(basename "$f" .c).o"
	$CC -std=c11 -ffreestanding -nostdinc -isystem "$($CC -print-file-name=include)" \
		-Isrc/os/freestanding-include -Iinclude -Isrc -DIODMA_FREESTANDING \
		-DIODMA_BUILDING_LIBRARY -Wall -Wextra -Werror -Wno-unused-parameter \
		-O2 -fno-pie -c "$f" -o "$o"
	objs+=("$o")
done
$CC -nostdlib -r "${objs[@]}" -o "$out/iodma-core.o"
undef=$(nm -u "$out/iodma-core.o" | awk '{print $2}' | grep -vxE 'memcpy|memmove|memset|memcmp|_GLOBAL_OFFSET_TABLE_' || true)
if [ -n "$undef" ]; then
	echo "freestanding: the core needs symbols a bare-metal target does not have:" >&2
	echo "$undef" >&2
	exit 1
fi
echo "freestanding: ${#core[@]} files compiled with -ffreestanding -nostdinc; no undefined symbol but mem*"
