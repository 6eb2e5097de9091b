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
#   3. no file under src/backend/ includes ../domain_priv.h: a backend
#      reaches its per-domain state through iodma_backend_priv() in
#      iodma/backend.h, never the domain's internals.
# Prints each offence and exits 1 if there is any.
set -uo pipefail
cd "$(dirname "$0")/.."
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

if [ "$bad" = 0 ]; then
	echo "layout-check: ok"
fi
exit "$bad"
