#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The ABI gate of libiodma.so.0 (issue 10), with libabigail (Debian's
# abigail-tools):
#   abi-check.sh check LIBIODMA.so   compare the built library with the dump
#                                    kept in the tree, abi/<its soname>.abi
#                                    (abi/libiodma.so.0.abi):
#                                    exit 1 on an incompatible change (a
#                                    removed or changed function or variable,
#                                    a changed public type reachable from
#                                    one), 0 otherwise; additions (new
#                                    functions) are printed and pass.
#   abi-check.sh dump LIBIODMA.so    rewrite abi/<soname>.abi from the
#                                    built library (`make abi-dump`).
# The library must carry debug info (meson's debug/debugoptimized builds).
# Only types reachable from the installed headers (include/) count.
#
# Policy (README "ABI"): the dump is the ABI of the last release.  A change
# that this check calls incompatible is a bug unless intended; when it is,
# in the same change: bump the soname (meson.build iodma_soversion: 0 -> 1),
# rename the version node of src/libiodma.map to the new release, run
# `make abi-dump` (it writes abi/libiodma.so.1.abi; delete the old dump)
# and commit both.  Additions (new functions, listed in a new node of the
# map) pass the check; regenerate the dump at release time so that the next
# release is compared with this one.
set -euo pipefail
mode=${1:-}
lib=${2:-}
[ -z "$lib" ] || [ ! -e "$lib" ] || lib=$(realpath "$lib")
cd "$(dirname "$0")/.."
opts=(--no-corpus-path --short-locs --no-comp-dir-path --drop-undefined-syms
      --headers-dir include)

for t in abidw abidiff; do
	command -v "$t" >/dev/null || {
		echo "abi: $t not found (Debian package abigail-tools; scripts/deps.sh test)" >&2
		exit 1; }
done
[ -n "$lib" ] && [ -f "$lib" ] || { echo "usage: $0 check|dump LIBIODMA.so" >&2; exit 2; }
soname=$(objdump -p "$lib" | awk '$1 == "SONAME" { print $2 }')
[ -n "$soname" ] || { echo "abi: $lib has no soname" >&2; exit 1; }
dump=abi/$soname.abi

case $mode in
dump)
	mkdir -p abi
	# No comment can precede the root element: abidiff recognises the
	# file by its first bytes (abi/README.md says where it comes from).
	abidw "${opts[@]}" --out-file "$dump" "$lib"
	echo "abi: wrote $dump"
	;;
check)
	[ -f "$dump" ] || { echo "abi: no $dump (make abi-dump)" >&2; exit 1; }
	rc=0
	out=$(abidiff --headers-dir2 include "$dump" "$lib") || rc=$?
	printf '%s\n' "$out"
	# abidiff's exit status is a bit field: 1 error, 2 usage error,
	# 4 an ABI change, 8 an incompatible one.  It sets 8 only for removed
	# symbols; a changed layout of a public struct or a changed prototype
	# is 4, as are added functions.  So: 8, or 4 with anything removed or
	# changed in its summaries, fails; 4 with additions only passes.
	if [ $((rc & 3)) -ne 0 ]; then
		echo "abi: abidiff failed (status $rc)" >&2
		exit 1
	fi
	if [ $((rc & 8)) -ne 0 ] ||
	   printf '%s\n' "$out" | grep -Eq 'summary: [1-9][0-9]* Removed|, [1-9][0-9]* Changed'; then
		echo "abi: INCOMPATIBLE change against $dump (see the policy in $0)" >&2
		exit 1
	fi
	if [ $((rc & 4)) -ne 0 ]; then
		echo "abi: additions only against $dump (regenerate it at release: make abi-dump)"
	else
		echo "abi: $lib matches $dump"
	fi
	;;
*) echo "usage: $0 check|dump LIBIODMA.so" >&2; exit 2 ;;
esac
