#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Section 3 manual pages from the kernel-doc comments of the public headers:
# Linux's `kernel-doc -man` writes them (with -Wall -Werror: a header comment
# it warns about fails the build), its split-man.pl cuts the stream into one
# page per function, macro, struct and enum; this script only relabels what
# is the kernel's (section 9, "Kernel Hacker's Manual", LINUX) as iodma's
# (section 3), drops the export macro from the synopses, puts the header
# to include at their top and names the pages.
# Usage: doc/man-pages.sh TOOLDIR OUTDIR VERSION HEADER...
#   TOOLDIR holds kernel-doc and split-man.pl (doc/kernel-doc-tools.sh);
#   OUTDIR receives NAME.3 for every documented function and macro, NAME.3type
#   for every documented struct and enum, and nothing else.
set -euo pipefail
tools=$1 out=$2 version=$3; shift 3

rm -rf "$out" "$out.split"
mkdir -p "$out" "$out.split"
err=$(mktemp); trap 'rm -f "$err"; rm -rf "$out.split"' EXIT
shopt -s nullglob
for h in "$@"; do
	header=iodma/$(basename "$h")
	split=$out.split/$(basename "$h" .h)
	# Stop on the first warning, and let no warning pass unseen: kernel-doc's
	# -Werror turns them into its exit status, and its stderr must be empty.
	if ! perl "$tools/kernel-doc" -man -Wall -Werror "$h" 2>"$err" \
		| perl "$tools/split-man.pl" "$split" 2>/dev/null \
		|| [ -s "$err" ]; then
		if [ -s "$err" ]; then
			cat "$err" >&2
			echo "man-pages: kernel-doc reported the above; fix the header comments" >&2
		else
			echo "man-pages: kernel-doc or split-man.pl failed on $h" >&2
		fi
		exit 1
	fi
	for f in "$split"/*.9; do
		title=$(basename "$f" .9)
		# Types go to section 3type, as the Linux man-pages project files
		# struct timespec (Debian's manpages-dev: man3/timespec.3type): a
		# struct may share its name with a function (iodma_vfio_region_info).
		case $title in
		"struct "*|"enum "*|"union "*|"typedef "*) sec=3type name=${title#* } ;;
		*) sec=3 name=$title ;;
		esac
		case $name in
		*[!A-Za-z0-9_]*|'') echo "man-pages: odd page name '$title'" >&2; exit 1 ;;
		esac
		if [ -e "$out/$name.$sec" ]; then
			echo "man-pages: two pages named $name.$sec" >&2; exit 1
		fi
		# Line 1 is the .TH kernel-doc wrote; the rest is its page as is,
		# less the export macro in the synopsis and the "struct " before a
		# type's name under NAME (whatis/lexgrog take the first word for
		# the name), plus the header to include at the top of the synopsis.
		{
			printf '.TH "%s" %s "" "iodma %s" "iodma Library Functions"\n' \
				"$name" "$sec" "$version"
			tail -n +2 "$f" | sed -e 's/^\.B "IODMA_EXPORT /.B "/' \
				-e '/^\.SH NAME$/{n;s/^\(struct\|enum\|union\|typedef\) //}' \
				-e "/^\.SH SYNOPSIS\$/a .B \"#include <$header>\"\n.sp"
		} > "$out/$name.$sec"
	done
done
n=$(ls "$out" | wc -l)
[ "$n" -gt 0 ] || { echo "man-pages: no page came out" >&2; exit 1; }
