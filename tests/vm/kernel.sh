#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# shellcheck disable=SC2012 # ls on package-made names
# Fetch or build a guest kernel for the VM test bed, cached outside the
# repository under ${IODMA_VM_CACHE:-$HOME/.cache/iodma-vm}, keyed by version.
#
# Usage: tests/vm/kernel.sh debian|mini     print the kernel's cache directory
#        tests/vm/kernel.sh ensure PKG...   install missing Debian packages (root)
#
#   debian  Debian's 6.12 cloud kernel (VFIO type1; no IOMMUFD).  The directory
#           holds vmlinuz, lib/modules/KVER/ (decompressed, depmod'ed),
#           modules.load: the .ko files to insmod, dependencies first, and
#           modules.extra: more, for the guests that want them (virtio_blk).
#   mini    tinyconfig + kernel-fragment.config built from linux-source-6.12
#           (type1 and iommufd, everything built in).  The directory holds
#           vmlinuz (the bzImage) and config.
#
# Logs go to stderr; the directory is the only line on stdout.
# Exit status: 0, 77 when the kernel cannot be had (no archive), 1 on error.
set -euo pipefail
tmp=

here=$(cd "$(dirname "$0")" && pwd)
cache=${IODMA_VM_CACHE:-$HOME/.cache/iodma-vm}
log() { echo "kernel.sh: $*" >&2; }
die() { log "$*"; exit 1; }
skip() { log "SKIP: $*"; exit 77; }

# ensure PKG...: install the missing ones as root, else fail listing them.
ensure() {
	local p st missing=()
	for p in "$@"; do
		st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
		[ "$st" = "install ok installed" ] || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	if [ "$(id -u)" -ne 0 ]; then
		log "missing Debian packages: ${missing[*]} (run as root, or apt-get install them)"
		return 1
	fi
	log "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null 2>&1 || apt-get update >&2 || return 1
	apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}" >/dev/null || return 1
}

# candidate VERSION of a package, empty if apt knows none.
candidate() {
	apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ { print $2; exit }' |
		grep -v '^(none)$' || true
}

# Make sure apt's lists are there (a fresh machine has none).
apt_ready() {
	if [ -z "$(candidate "$1")" ] && [ "$(id -u)" -eq 0 ]; then
		apt-get update -qq >/dev/null 2>&1 || true
	fi
	[ -n "$(candidate "$1")" ]
}

# download PKG into DIR and unpack it into DIR/x.
fetch_deb() {
	local pkg=$1 dir=$2
	local dl
	mkdir -p "$dir/x"
	# Download where apt's _apt user can write (else apt warns and
	# downloads as root anyway).
	dl=$(mktemp -d "${TMPDIR:-/tmp}/iodma-vm-dl.XXXXXX")
	chmod 755 "$dl"
	if ! (cd "$dl" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >&2); then
		rm -rf "$dl"
		skip "cannot download $pkg from the archive"
	fi
	dpkg -x "$dl"/"${pkg}"_*.deb "$dir/x"
	rm -rf "$dl"
}

# Module names wanted on the Debian kernel (- and _ are the same), loaded by
# init.sh (modules.load): VFIO.  Extra ones are shipped but listed apart
# (modules.extra), for the guests that load them: virtio_blk for
# tests/vm/vhost-user-blk.sh (init.sh binds the virtio-blk to vfio-pci, so
# its driver stays unloaded there).  Both lists are part of the cache key.
debian_modules=(vfio vfio_iommu_type1 vfio_pci vfio_pci_core irqbypass
	virtio_iommu virtio_pci)
debian_extra=(virtio_blk)

debian() {
	ensure kmod xz-utils || skip "kmod and xz-utils are missing (not root to install them)"
	local meta=linux-image-6.12-cloud-amd64 real ver key dir
	apt_ready "$meta" || skip "apt knows no $meta (no Debian archive?)"
	real=$(apt-cache depends "$meta" 2>/dev/null |
		awk '/Depends: linux-image-/ { print $2; exit }')
	[ -n "$real" ] || skip "cannot resolve $meta to a kernel package"
	ver=$(candidate "$real")
	[ -n "$ver" ] || skip "apt has no candidate for $real"
	key="debian-${real#linux-image-}-$ver-$(echo "${debian_modules[*]} / ${debian_extra[*]}" | sha256sum | cut -c1-8)"
	dir="$cache/$key"
	if [ -f "$dir/.done" ]; then
		echo "$dir"
		return 0
	fi
	log "fetching $real $ver into $dir"
	mkdir -p "$cache"
	tmp=$(mktemp -d "$cache/.tmp-debian.XXXXXX")
	trap 'rm -rf "${tmp:-}"' EXIT
	fetch_deb "$real" "$tmp"

	local kver src
	kver=$(ls "$tmp/x/lib/modules" | head -n1)
	[ -n "$kver" ] || die "no lib/modules in $real"
	src="$tmp/x/lib/modules/$kver"
	# The package ships no modules.dep (its postinst makes it).
	[ -f "$src/modules.dep" ] || depmod -b "$tmp/x" "$kver"
	local out="$tmp/out"
	mkdir -p "$out/lib/modules/$kver"
	cp "$tmp/x/boot/vmlinuz-$kver" "$out/vmlinuz"
	cp "$src/modules.builtin" "$src/modules.order" "$out/lib/modules/$kver/" 2>/dev/null || true
	cp "$src/modules.builtin.modinfo" "$out/lib/modules/$kver/" 2>/dev/null || true

	# Resolve the wanted modules and their dependencies through modules.dep,
	# dependencies first (post-order), each once.
	declare -A depof=() seen=() byname=()
	local line m deps path name
	while IFS= read -r line; do
		m=${line%%:*}
		deps=${line#*:}
		depof[$m]=$deps
		name=$(basename "$m")
		name=${name%%.ko*}
		byname[${name//-/_}]=$m
	done <"$src/modules.dep"
	local order=()
	visit() {
		local mm=$1 d
		[ -n "${seen[$mm]:-}" ] && return 0
		seen[$mm]=1
		for d in ${depof[$mm]}; do
			visit "$d"
		done
		order+=("$mm")
	}
	local nload=0 i=0
	for name in "${debian_modules[@]}" / "${debian_extra[@]}"; do
		if [ "$name" = / ]; then
			nload=${#order[@]}
		elif [ -n "${byname[$name]:-}" ]; then
			visit "${byname[$name]}"
		elif grep -q "/${name//_/[-_]}\.ko" "$src/modules.builtin"; then
			log "$name is built in"
		else
			die "module $name is neither a module nor built in in $kver"
		fi
	done

	: >"$out/modules.load"
	: >"$out/modules.extra"
	for path in "${order[@]}"; do
		mkdir -p "$out/lib/modules/$kver/$(dirname "$path")"
		case $path in
		*.ko.xz) xz -dc "$src/$path" >"$out/lib/modules/$kver/${path%.xz}" ;;
		*.ko.zst) zstd -dcq "$src/$path" >"$out/lib/modules/$kver/${path%.zst}" ;;
		*.ko.gz) gzip -dc "$src/$path" >"$out/lib/modules/$kver/${path%.gz}" ;;
		*) cp "$src/$path" "$out/lib/modules/$kver/$path" ;;
		esac
		path=${path%.xz}; path=${path%.zst}; path=${path%.gz}
		if [ $i -lt $nload ]; then
			echo "/lib/modules/$kver/$path" >>"$out/modules.load"
		else
			echo "/lib/modules/$kver/$path" >>"$out/modules.extra"
		fi
		i=$((i + 1))
	done
	depmod -b "$out" "$kver"
	echo "$kver" >"$out/kver"
	log "modules: $(xargs -n1 basename <"$out/modules.load" | tr '\n' ' ')"
	rm -rf "$dir"
	mv "$out" "$dir"
	touch "$dir/.done"
	echo "$dir"
}

mini() {
	local pkg=linux-source-6.12 ver fhash key dir
	apt_ready "$pkg" || skip "apt knows no $pkg (no Debian archive?)"
	ver=$(candidate "$pkg")
	fhash=$(sha256sum "$here/kernel-fragment.config" | cut -c1-12)
	key="mini-$ver-$fhash"
	dir="$cache/$key"
	if [ -f "$dir/.done" ]; then
		echo "$dir"
		return 0
	fi
	ensure make gcc libc6-dev bc bison flex libelf-dev libssl-dev xz-utils ||
		skip "the kernel build dependencies are missing (not root to install them)"
	mkdir -p "$cache"
	tmp=$(mktemp -d "$cache/.tmp-mini.XXXXXX")
	trap 'rm -rf "${tmp:-}"' EXIT
	log "building $pkg $ver (tinyconfig + kernel-fragment.config) in $tmp"
	fetch_deb "$pkg" "$tmp"
	local tarball
	tarball=$(ls "$tmp"/x/usr/src/linux-source-*.tar.* | head -n1)
	[ -n "$tarball" ] || die "no source tarball in $pkg"
	tar -C "$tmp" -xf "$tarball"
	rm -rf "$tmp/x" "$tmp"/*.deb
	local ksrc
	ksrc=$(ls -d "$tmp"/linux-source-*/ | head -n1)
	local t0=$SECONDS
	if ! (
		cd "$ksrc"
		make -s tinyconfig
		scripts/kconfig/merge_config.sh -m .config "$here/kernel-fragment.config"
		make -s olddefconfig
	) >"$tmp/config.log" 2>&1; then
		cat "$tmp/config.log" >&2
		die "kernel configuration failed"
	fi
	# Every option of the fragment must have come out as asked.
	local bad=() opt
	while IFS= read -r line; do
		case $line in
		CONFIG_*=y)
			grep -qx "$line" "$ksrc/.config" || bad+=("$line")
			;;
		"# CONFIG_"*" is not set")
			opt=${line#\# }; opt=${opt%% *}
			! grep -q "^$opt=[ym]" "$ksrc/.config" || bad+=("$opt off")
			;;
		esac
	done <"$here/kernel-fragment.config"
	if [ ${#bad[@]} -ne 0 ]; then
		die "kernel .config lacks: ${bad[*]} (a dependency of the fragment is missing)"
	fi
	log "make -j$(nproc) bzImage"
	make -C "$ksrc" -s -j"$(nproc)" bzImage >&2 || die "kernel build failed"
	log "built in $((SECONDS - t0)) s"
	local out="$tmp/out"
	mkdir -p "$out"
	cp "$ksrc/arch/x86/boot/bzImage" "$out/vmlinuz"
	cp "$ksrc/.config" "$out/config"
	make -C "$ksrc" -s kernelrelease >"$out/kver" 2>/dev/null || echo "$ver" >"$out/kver"
	: >"$out/modules.load"
	rm -rf "$dir"
	mv "$out" "$dir"
	touch "$dir/.done"
	echo "$dir"
}

cmd=${1:-}
case $cmd in
ensure)
	shift
	ensure "$@"
	;;
debian | mini)
	mkdir -p "$cache"
	# One fetch/build per tier at a time (meson and a hand run may race).
	exec 9>"$cache/.lock-$cmd"
	flock 9
	"$cmd"
	;;
*)
	echo "usage: $0 debian|mini | ensure PKG..." >&2
	exit 2
	;;
esac
