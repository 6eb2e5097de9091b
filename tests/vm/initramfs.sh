#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Build the guest's initramfs for the VM test bed.
#
# Usage: tests/vm/initramfs.sh OUT.cpio.gz KERNEL_DIR TEST[:BACKENDS] ...
#   KERNEL_DIR  a directory made by kernel.sh (its lib/modules and
#               modules.load are copied; the mini tier has none)
#   TEST        a test binary built by meson; it goes to /tests/NAME, and a
#               line "/tests/NAME" to /tests.list (":vfio,iommufd" limits the
#               backends it is run with: "backends=vfio,iommufd /tests/NAME").
#               Dynamically linked binaries get their ELF interpreter and
#               every library ldd lists.
# Content: busybox-static with its applet links, /init (init.sh, or the
# script named by IODMA_VM_INIT), modules, tests; packed with
# cpio -H newc | gzip.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 2 ] || { echo "usage: $0 OUT.cpio.gz KERNEL_DIR TEST[:BACKENDS]..." >&2; exit 2; }
out=$1
kdir=$2
shift 2

busybox=${BUSYBOX:-/bin/busybox}
[ -x "$busybox" ] || { echo "initramfs.sh: no $busybox (apt-get install busybox-static)" >&2; exit 1; }
if ldd "$busybox" >/dev/null 2>&1; then
	echo "initramfs.sh: $busybox is dynamically linked; install busybox-static" >&2
	exit 1
fi

root=$(mktemp -d "${TMPDIR:-/tmp}/iodma-initramfs.XXXXXX")
trap 'rm -rf "$root"' EXIT

mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,tests,lib64}
cp "$busybox" "$root/bin/busybox"
"$busybox" --list-full | while read -r applet; do
	[ -e "$root/$applet" ] || { mkdir -p "$root/$(dirname "$applet")"; ln -s /bin/busybox "$root/$applet"; }
done
[ -e "$root/bin/sh" ] || ln -s busybox "$root/bin/sh"
install -m 755 "${IODMA_VM_INIT:-$here/init.sh}" "$root/init"

if [ -d "$kdir/lib/modules" ]; then
	cp -a "$kdir/lib" "$root/"
fi
if [ -s "$kdir/modules.load" ]; then
	cp "$kdir/modules.load" "$root/modules.load"
fi
if [ -s "$kdir/modules.extra" ]; then
	cp "$kdir/modules.extra" "$root/modules.extra"
fi

# copy_lib PATH: copy a library or interpreter to the same path in the image.
copy_lib() {
	local p=$1
	[ -e "$root$p" ] && return 0
	mkdir -p "$root$(dirname "$p")"
	cp -L "$p" "$root$p"
}

: >"$root/tests.list"
for spec in "$@"; do
	bin=${spec%%:*}
	backends=
	[ "$bin" = "$spec" ] || backends=${spec#*:}
	[ -x "$bin" ] || { echo "initramfs.sh: $bin is not an executable" >&2; exit 1; }
	name=$(basename "$bin")
	cp "$bin" "$root/tests/$name"
	if ldd "$bin" >/dev/null 2>&1; then
		# "libx.so => /path (0x..)" and "/lib64/ld-linux-x86-64.so.2 (0x..)"
		ldd "$bin" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' |
			while read -r lib; do copy_lib "$lib"; done
	fi
	if [ -n "$backends" ]; then
		echo "backends=$backends /tests/$name" >>"$root/tests.list"
	else
		echo "/tests/$name" >>"$root/tests.list"
	fi
done

mkdir -p "$(dirname "$out")"
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort |
	cpio -o -H newc -R 0:0 --quiet) | gzip -6 >"$out.tmp"
mv "$out.tmp" "$out"
