#!/usr/bin/env bash
# Installs the Debian packages iodma needs to build, test and run its demo.
# Usage: scripts/deps.sh [build|test|state]
#   build: compiler, Meson, ninja, liburcu, OpenSSL's libcrypto (demo SHA-256)
#   test:  the above + cmocka, valgrind, GLib (bench/ baselines), g++ (C++17
#          header test; clang++ is used too if installed)
#   state: print a fingerprint of which of all these are installed, at which
#          version (scripts/setup-build.sh reconfigures a tree when it changes)
# As root, missing packages are installed with apt-get; otherwise the missing
# ones are listed and the script fails.
set -euo pipefail

build_pkgs=(gcc libc6-dev pkg-config meson ninja-build liburcu-dev libssl-dev)
test_pkgs=(libcmocka-dev valgrind libglib2.0-dev g++)

case ${1:-build} in
build) want=("${build_pkgs[@]}") ;;
test) want=("${build_pkgs[@]}" "${test_pkgs[@]}") ;;
state)
	# dpkg-query exits 1 when any of them is unknown; its output still counts.
	{ dpkg-query -W -f='${Package}=${Version}=${Status}\n' "${build_pkgs[@]}" "${test_pkgs[@]}" \
		2>/dev/null || true; } | sort | cksum | cut -d' ' -f1
	exit 0 ;;
*) echo "usage: scripts/deps.sh [build|test|state]" >&2; exit 2 ;;
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
