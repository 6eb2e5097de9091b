#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs the Debian packages iodma needs to build, test and run its demo.
# Usage: scripts/deps.sh [build|test|deb|baremetal|state]
#   build: compiler, Meson, ninja, liburcu, OpenSSL's libcrypto (demo SHA-256),
#          json-c (`iodma info --json`; the tool's, not the library's)
#   test:  the above + cmocka, valgrind, GLib (bench/ baselines),
#          abigail-tools (abidiff, the ABI check), clang with libFuzzer (the
#          fuzz tier of make check), and the manual pages' tools:
#          linux-source-6.12 (Linux's scripts/kernel-doc, taken out of its
#          tarball by doc/kernel-doc-tools.sh), perl, help2man, man-db (the
#          doc tier renders every page), g++ (C++17 header test; clang++
#          is used too)
#   deb:   what `make deb` needs: dpkg-dev, debhelper, lintian, then the
#          Build-Depends of debian/control (apt-get build-dep ./)
#   baremetal: the aarch64 and riscv64 cross compilers (used freestanding)
#          and QEMU's system emulators for examples/baremetal; libaio1, the
#          one library the backports QEMU for riscv64 (Zicbom, unpacked
#          privately by scripts/check-baremetal.sh) needs beyond Debian 12's
#   state: print a fingerprint of which of all these are installed, at which
#          version (scripts/setup-build.sh reconfigures a tree when it changes)
# As root, missing packages are installed with apt-get; otherwise the missing
# ones are listed and the script fails.
set -euo pipefail

build_pkgs=(gcc libc6-dev pkg-config meson ninja-build liburcu-dev libssl-dev libjson-c-dev)
test_pkgs=(libcmocka-dev valgrind libglib2.0-dev abigail-tools clang libclang-rt-14-dev
	linux-source-6.12 perl help2man man-db g++)
baremetal_pkgs=(gcc-aarch64-linux-gnu gcc-riscv64-linux-gnu qemu-system-arm qemu-system-misc libaio1)

case ${1:-build} in
build) want=("${build_pkgs[@]}") ;;
test) want=("${build_pkgs[@]}" "${test_pkgs[@]}") ;;
deb)
	cd "$(dirname "$0")/.."
	"$0" debtools || exit 1
	# dpkg-checkbuilddeps names what debian/control's Build-Depends lacks.
	unmet=$(dpkg-checkbuilddeps 2>&1) && exit 0
	if [ "$(id -u)" -ne 0 ]; then
		echo "iodma: $unmet" >&2
		echo "iodma: run as root, or: sudo apt-get build-dep ./" >&2
		exit 1
	fi
	echo "iodma: installing the Build-Depends of debian/control" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null || apt-get update
	apt-get build-dep -y -qq --no-install-recommends ./ >/dev/null
	exit 0 ;;
debtools) want=(dpkg-dev debhelper lintian) ;;
baremetal) want=("${baremetal_pkgs[@]}") ;;
state)
	# dpkg-query exits 1 when any of them is unknown; its output still counts.
	{ dpkg-query -W -f='${Package}=${Version}=${Status}\n' "${build_pkgs[@]}" "${test_pkgs[@]}" \
		2>/dev/null || true; } | sort | cksum | cut -d' ' -f1
	exit 0 ;;
*) echo "usage: scripts/deps.sh [build|test|deb|baremetal|state]" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
	st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	[ "$st" = "install ok installed" ] || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "iodma: missing Debian packages: ${missing[*]}" >&2
	echo "iodma: run as root, or: sudo apt-get install ${missing[*]}" >&2
	exit 1
fi
echo "iodma: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null || apt-get update
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
