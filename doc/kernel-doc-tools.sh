#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Takes Linux's kernel-doc (Perl) and split-man.pl out of the linux-source
# tarball Debian installs under /usr/src (package linux-source-6.12), or out
# of an unpacked tree, into OUTDIR.  Both are used as they are: the API
# reference is made by Linux's own tools, not by a generator of ours.
# Usage: doc/kernel-doc-tools.sh SOURCE OUTDIR
#   SOURCE: /usr/src/linux-source-X.tar.xz, or a directory with scripts/
set -euo pipefail
src=$1 out=$2
mkdir -p "$out"
tools=(kernel-doc split-man.pl)
if [ -d "$src" ]; then
	for t in "${tools[@]}"; do cp "$src/scripts/$t" "$out/$t.tmp"; done
else
	top=$(basename "$src"); top=${top%%.tar*}
	tmp=$(mktemp -d "$out/.extract.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	# One pass through the archive for both members (it is 150 MB of xz).
	tar -C "$tmp" -xf "$src" "${tools[@]/#/$top/scripts/}"
	for t in "${tools[@]}"; do mv "$tmp/$top/scripts/$t" "$out/$t.tmp"; done
fi
for t in "${tools[@]}"; do
	chmod +x "$out/$t.tmp"
	mv "$out/$t.tmp" "$out/$t"
done
