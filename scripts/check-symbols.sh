#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Symbol hygiene of the built libraries (issue 10):
#   - the static archive defines no global symbol but iodma_* (nm).
# Usage: check-symbols.sh LIBIODMA.a
set -euo pipefail
a=$1
fail=0

bad=$(nm -g --defined-only "$a" | awk 'NF == 3 && $3 !~ /^iodma_/ { print $3 }')
n=$(nm -g --defined-only "$a" | awk 'NF == 3 && $3 ~ /^iodma_/' | wc -l)
if [ -n "$bad" ]; then
	echo "symbols: $a defines non-iodma_ globals:" $bad >&2
	fail=1
fi
[ "$n" -gt 0 ] || { echo "symbols: $a defines no iodma_ symbol" >&2; fail=1; }
echo "symbols: $a: $n global symbols, all iodma_*"

exit $fail
