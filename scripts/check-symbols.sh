#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Symbol hygiene of the built libraries (issue 10):
#   - the static archive defines no global symbol but iodma_* (nm);
#   - the shared library exports no symbol but iodma_*, each under the
#     version node IODMA_0.2 (objdump -T), and its soname is libiodma.so.0.
# Usage: check-symbols.sh LIBIODMA.a LIBIODMA.so
set -euo pipefail
a=$1 so=$2
fail=0

bad=$(nm -g --defined-only "$a" | awk 'NF == 3 && $3 !~ /^iodma_/ { print $3 }')
n=$(nm -g --defined-only "$a" | awk 'NF == 3 && $3 ~ /^iodma_/' | wc -l)
if [ -n "$bad" ]; then
	echo "symbols: $a defines non-iodma_ globals:" $bad >&2
	fail=1
fi
[ "$n" -gt 0 ] || { echo "symbols: $a defines no iodma_ symbol" >&2; fail=1; }
echo "symbols: $a: $n global symbols, all iodma_*"

# objdump -T: "addr flags section size version name"; defined = not *UND*.
defs=$(objdump -T "$so" | awk '$0 ~ /DF|DO/ && $0 !~ /\*UND\*/ { print $(NF-1), $NF }')
nd=$(printf '%s\n' "$defs" | grep -c . || true)
badso=$(printf '%s\n' "$defs" | awk '$2 !~ /^iodma_/ || $1 != "IODMA_0.2" { print $1 " " $2 }' | grep -v '^IODMA_0.2 IODMA_0.2$' || true)
if [ -n "$badso" ]; then
	echo "symbols: $so exports outside iodma_*@IODMA_0.2:" >&2
	printf '%s\n' "$badso" | sed 's/^/  /' >&2
	fail=1
fi
[ "$nd" -gt 0 ] || { echo "symbols: $so exports nothing" >&2; fail=1; }
echo "symbols: $so: $nd exports, all iodma_* under IODMA_0.2"

soname=$(objdump -p "$so" | awk '$1 == "SONAME" { print $2 }')
if [ "$soname" != "libiodma.so.0" ]; then
	echo "symbols: $so: soname '$soname', expected libiodma.so.0" >&2
	fail=1
fi
exit $fail
