#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The doc tier of make check (meson test --suite doc):
#   1. kernel-doc -Wall -Werror over the public headers: no warning;
#   2. every function libiodma.so exports has its section 3 page;
#   3. every page (section 3 and 1) renders through man(1) with groff's
#      warnings on and none printed, and lexgrog reads its NAME line
#      (lintian's groff-message and bad-whatis-entry checks).
# Usage: doc/check-man.sh KERNEL_DOC LIBIODMA_SO MAN3DIR MAN1PAGE... -- HEADER...
set -uo pipefail
kernel_doc=$1 lib=$2 man3=$3; shift 3
man1=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do man1+=("$1"); shift; done
shift
fail=0
err=$(mktemp); trap 'rm -f "$err"' EXIT

perl "$kernel_doc" -none -Wall -Werror "$@" 2>"$err"
rc=$?
if [ $rc -ne 0 ] || [ -s "$err" ]; then
	cat "$err"
	echo "FAIL: kernel-doc warns about the header comments (exit $rc)"
	fail=1
else
	echo "ok: kernel-doc -Wall -Werror: no warning over $# headers"
fi

exports=$(nm -D --defined-only "$lib" | awk '$2 ~ /^[TW]$/ { sub(/@.*/, "", $3); print $3 }' | sort -u)
n=0 missing=0
for f in $exports; do
	n=$((n + 1))
	if [ ! -f "$man3/$f.3" ]; then
		echo "FAIL: $f is exported by $(basename "$lib") and has no page $f.3"
		missing=$((missing + 1))
	fi
done
if [ "$n" -eq 0 ]; then
	echo "FAIL: no exported function found in $lib"; fail=1
elif [ "$missing" -ne 0 ]; then
	fail=1
else
	echo "ok: all $n exported functions have a section 3 page"
fi

pages=0 bad=0
for p in "$man3"/* "${man1[@]}"; do
	pages=$((pages + 1))
	if ! LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z "$p" \
		>/dev/null 2>"$err" || [ -s "$err" ]; then
		echo "FAIL: $p does not render cleanly:"; cat "$err"
		bad=$((bad + 1))
	elif ! lexgrog "$p" >/dev/null 2>&1; then
		# mandb would index no name for it (lintian: bad-whatis-entry).
		echo "FAIL: $p: lexgrog finds no NAME entry"
		bad=$((bad + 1))
	fi
done
if [ "$bad" -ne 0 ]; then
	fail=1
else
	echo "ok: $pages pages render with no groff warning"
fi
exit $fail
