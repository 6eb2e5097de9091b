#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Where the Linux code may live (issue 10, "The Linux code in one place"):
#   1. no file under src/ outside src/backend/ and src/os/ includes a Linux
#      or POSIX system header (<linux/...>, <asm/...>, <sys/...>, <fcntl.h>,
#      <unistd.h>, <dirent.h>, <poll.h>, <pthread.h>);
#   2. no backend includes another backend's private header: a backend
#      src/backend/NAME.c (one that defines iodma_backend_ops) may include
#      only its own NAME_priv.h; shared code goes in linux_common.h or
#      ident_book.h.  vfio_device.c is the device layer above the backends,
#      not a backend.
#   3. the core is freestanding (what scripts/freestanding-check.sh checked
#      before the bare-metal runs superseded it; kept here because those
#      runs skip where no cross compiler or QEMU can be had, and this needs
#      only the host's gcc): every file of scripts/core-files.sh compiles
#      with -ffreestanding -nostdinc, seeing only the compiler's own headers
#      and the shims in src/os/freestanding-include (an OS header fails);
#      linked -nostdlib -r, it needs no symbol but mem* and contains no
#      system-call instruction (an OS call fails).  scripts/check-baremetal.sh
#      checks the same for aarch64 and riscv64, then links and boots it.
#   4. no file under src/backend/ includes ../domain_priv.h: a backend
#      reaches its per-domain state through iodma_backend_priv() in
#      iodma/backend.h, never the domain's internals.
# Prints each offence and exits 1 if there is any.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/core-files.sh
bad=0

sys='^[[:space:]]*#[[:space:]]*include[[:space:]]*<(linux/|asm/|asm-generic/|sys/|fcntl\.h|unistd\.h|dirent\.h|poll\.h|pthread\.h)'
while IFS= read -r f; do
	case "$f" in src/backend/* | src/os/*) continue ;; esac
	if grep -nE "$sys" "$f" | sed "s|^|$f:|"; then
		bad=1
	fi
done < <(find src -name '*.[ch]' | sort)

for f in src/backend/*.[ch]; do
	if grep -nE '^[[:space:]]*#[[:space:]]*include[[:space:]]*"([^"]*/)?domain_priv\.h"' "$f" | sed "s|^|$f:|"; then
		echo "$f: a backend includes the domain's internals (use iodma_backend_priv())"
		bad=1
	fi
done

for f in src/backend/*.c; do
	grep -q 'struct iodma_backend_ops' "$f" || continue
	name=$(basename "$f" .c)
	while IFS= read -r inc; do
		h=$(sed -E 's/.*"(.*)".*/\1/' <<<"$inc")
		h=$(basename "$h")
		if [ "$h" != "${name}_priv.h" ]; then
			echo "$f: backend $name includes another backend's header: $inc"
			bad=1
		fi
	done < <(grep -E '^[[:space:]]*#[[:space:]]*include[[:space:]]*"[^"]*_priv\.h"' "$f" | grep -v 'domain_priv\.h\|memory_priv\.h')
done

CC=${CC:-gcc}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
objs=()
for f in "${core_files[@]}"; do
	o="$out/$(echo "$f" | tr / _).o"
	if ! $CC -std=c11 -ffreestanding -nostdinc -isystem "$($CC -print-file-name=include)" \
		-Isrc/os/freestanding-include -Iinclude -Isrc -DIODMA_FREESTANDING \
		-DIODMA_BUILDING_LIBRARY -Wall -Wextra -Werror -Wno-unused-parameter \
		-O2 -fno-pie -c "$f" -o "$o"; then
		echo "$f: does not compile freestanding (-ffreestanding -nostdinc)"
		bad=1
	fi
	objs+=("$o")
done
if [ "$bad" = 0 ]; then
	case $($CC -dumpmachine) in
	x86_64*) arch=x86-64 ;; aarch64*) arch=aarch64 ;; riscv64*) arch=riscv64 ;; *) arch=unknown ;;
	esac
	if ! $CC -nostdlib -r "${objs[@]}" -o "$out/core.o" || ! core_is_freestanding "$out/core.o" "$arch"; then
		bad=1
	fi
fi

if [ "$bad" = 0 ]; then
	echo "layout-check: ok (the ${#core_files[@]} core files freestanding: -nostdinc, no symbol but mem*, no system call)"
fi
exit "$bad"
