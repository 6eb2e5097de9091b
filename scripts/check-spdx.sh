#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Every tracked source file (C, headers, meson, scripts, python, shell,
# Makefile, configs) carries "SPDX-License-Identifier: MIT" on its first or
# second line (the second only after a #! line).  Documentation (*.md),
# fuzz corpora and generated ABI dumps are data, not source, and are skipped;
# so are debian/ (its formats have no comment syntax for some files, and
# debian/copyright states the license in Debian's machine-readable form) and
# help2man's include files (doc/*.h2m, roff text copied into the pages).
# Exits 1 and names every file that lacks the line.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=0
while IFS= read -r -d '' f; do
	case "$f" in
	*.md | .gitignore | LICENSE | tests/fuzz/corpus/* | abi/* | debian/* | doc/*.h2m) continue ;;
	esac
	[ -f "$f" ] || continue
	if ! head -n 2 -- "$f" | grep -q 'SPDX-License-Identifier: MIT'; then
		echo "spdx: $f: no 'SPDX-License-Identifier: MIT' on line 1 or 2" >&2
		missing=$((missing + 1))
	fi
done < <(git ls-files -z)

if [ "$missing" -ne 0 ]; then
	echo "spdx: $missing file(s) without an SPDX line" >&2
	exit 1
fi
echo "spdx: every tracked source file has an SPDX line"
