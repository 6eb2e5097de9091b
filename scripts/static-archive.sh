#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Build the installed libiodma.a from the library's objects so that it
# exposes only the public iodma_* symbols (issue 10):
#   1. ld -r links every object into one relocatable object: calls between
#      the library's files are resolved inside it;
#   2. objcopy --localize-hidden makes every hidden symbol (everything not
#      marked IODMA_EXPORT: the library builds with -fvisibility=hidden)
#      local, so a program may define its own os_malloc or btree_insert;
#   3. ar packs that one object.
# Usage: static-archive.sh OUT.a LD OBJCOPY AR INPUT.a
set -euo pipefail
out=$1 ld=$2 objcopy=$3 ar=$4 in=$5

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
in=$(realpath "$in")
objs=()
if [ "$(head -c 7 "$in")" = '!<thin>' ]; then
	# meson's uninstalled archives are thin: members are paths relative
	# to the archive's directory.
	while IFS= read -r m; do
		case "$m" in /*) objs+=("$m") ;; *) objs+=("$(dirname "$in")/$m") ;; esac
	done < <("$ar" t "$in")
else
	mkdir "$tmp/x"
	(cd "$tmp/x" && "$ar" x "$in")
	objs=("$tmp"/x/*.o)
fi
[ ${#objs[@]} -gt 0 ] || { echo "static-archive: $in has no objects" >&2; exit 1; }
"$ld" -r -o "$tmp/iodma.o" "${objs[@]}"
"$objcopy" --localize-hidden "$tmp/iodma.o"
rm -f "$out"
"$ar" rcsD "$out" "$tmp/iodma.o"
