#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The cross tier of `make check`: the unit suites and the demo built for
# aarch64 and riscv64 and run under qemu-user, and the barrier check
# (scripts/check-barriers.sh) on every architecture.
# Usage: scripts/check-cross.sh [aarch64] [riscv64]   (default: both)
#
# What it needs (installed here as root, else it SKIPs with the reason):
#   aarch64  gcc-aarch64-linux-gnu with libc6-dev-arm64-cross (only a
#            Recommends of the compiler), qemu-user-static, and the arm64 multiarch
#            packages libc6 liburcu-dev libcmocka-dev libssl-dev
#            (dpkg --add-architecture arm64).  qemu runs the binaries with
#            the multiarch loader /lib/ld-linux-aarch64.so.1: giving it
#            -L /usr/aarch64-linux-gnu instead mixes that tree's ld.so with
#            the multiarch libc.so.6 of another build, and every
#            pthread_create then hangs.
#   riscv64  gcc-riscv64-linux-gnu, qemu-user-static, mmdebstrap.  Debian 12
#            has no riscv64 archive, so the target's libraries come from
#            Debian 13 (trixie), extracted, not installed, into
#            build-riscv64-sysroot/ (kept between runs; delete it to refresh).
# Time: code runs several times slower under qemu-user; the fuzz driver's generated
# inputs are lowered to 2000 (IODMA_FUZZ_COUNT, which it reads; the seed
# corpus is still run whole), as the valgrind tier does.
# Prints "cross: N passed, N failed, N skipped" and exits non-zero on a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/testlog-tally.sh
arches=("$@")
[ ${#arches[@]} -eq 0 ] && arches=(aarch64 riscv64)
root=$(pwd)
failed=()
skipped=()

have_pkgs() { # package...
	local p st
	for p in "$@"; do
		st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
		[ "$st" = "install ok installed" ] || return 1
	done
}

install_pkgs() { # package...
	have_pkgs "$@" && return 0
	if [ "$(id -u)" -ne 0 ]; then
		echo "cross: not root and missing some of: $*" >&2
		return 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null 2>&1 || true
	apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

setup_aarch64() {
	if ! dpkg --print-foreign-architectures | grep -qx arm64; then
		[ "$(id -u)" -eq 0 ] || { echo "arm64 is not a dpkg architecture here (needs root)"; return 1; }
		dpkg --add-architecture arm64
		apt-get update -qq >/dev/null 2>&1 || true
	fi
	# libc6-dev-arm64-cross (the compiler's start files and libc to link
	# against) is only a Recommends of gcc-aarch64-linux-gnu: without it,
	# as on a fresh Debian 12 root, the sanity check fails ("cannot find
	# Scrt1.o").
	install_pkgs gcc-aarch64-linux-gnu binutils-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static \
		libc6:arm64 liburcu-dev:arm64 libcmocka-dev:arm64 libssl-dev:arm64 \
		libjson-c-dev:arm64 \
		>/dev/null 2>&1 || { echo "could not install the aarch64 toolchain, qemu-user-static or arm64 libraries"; return 1; }
	echo "--cross-file scripts/cross/aarch64-linux-gnu.ini"
}

setup_riscv64() {
	local sysroot=$root/build-riscv64-sysroot
	# The stamp holds the package list: a sysroot made with fewer
	# packages (before json-c, say) is made again.
	local pkgs=libc6-dev,libgcc-s1,libatomic1,liburcu-dev,libcmocka-dev,libssl-dev,libjson-c-dev
	install_pkgs gcc-riscv64-linux-gnu binutils-riscv64-linux-gnu qemu-user-static mmdebstrap \
		>/dev/null 2>&1 || { echo "could not install the riscv64 toolchain, qemu-user-static or mmdebstrap"; return 1; }
	if [ "$(cat "$sysroot/.complete" 2>/dev/null)" != "$pkgs" ]; then
		# The Debian mirror this machine's apt already uses.
		local mirror
		mirror=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\/debian\)$/\1/p' \
			/etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
		[ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $2 ~ /\/debian\/?$/ { print $2; exit }' \
			/etc/apt/sources.list 2>/dev/null)
		[ -n "$mirror" ] || { echo "no Debian mirror in this machine's apt sources"; return 1; }
		rm -rf "$sysroot"
		mmdebstrap --quiet --variant=extract --architectures=riscv64 \
			--include="$pkgs" \
			trixie "$sysroot" "$mirror" >/dev/null 2>&1 ||
			{ echo "mmdebstrap could not fetch Debian 13's riscv64 libraries"; return 1; }
		# Debian 13 has merged /usr: the /lib -> usr/lib link that an
		# install makes (the loader is /lib/ld-linux-riscv64-lp64d.so.1).
		[ -e "$sysroot/lib" ] || ln -s usr/lib "$sysroot/lib"
		echo "$pkgs" > "$sysroot/.complete"
	fi
	printf "[constants]\nsysroot = '%s'\n" "$sysroot" > "$sysroot/iodma-sysroot.ini"
	echo "--cross-file $sysroot/iodma-sysroot.ini --cross-file scripts/cross/riscv64-linux-gnu.ini"
}

for a in "${arches[@]}"; do
	case $a in
	aarch64 | riscv64) ;;
	*) echo "usage: scripts/check-cross.sh [aarch64] [riscv64]" >&2; exit 2 ;;
	esac
done

# The host's build tools (a fresh machine running this script alone has
# none); gcc and g++ compile check-barriers.sh's x86-64 probes (C and C++).
install_pkgs meson ninja-build pkg-config python3 gcc g++ libc6-dev >/dev/null 2>&1 ||
	{ echo "cross: SKIP: meson, ninja-build, pkg-config, python3, gcc or g++ missing and not installable"; exit 0; }

for a in "${arches[@]}"; do
	echo "== cross $a"
	t0=$(date +%s)
	if ! args=$(setup_$a); then
		echo "cross $a: SKIP: $args"
		skipped+=("$a")
		continue
	fi
	dir=build-$a
	log=$root/build-$a-setup.log
	# The setup and build output goes to a log, shown when either fails (a
	# newcomer's machine must say what broke, not only that it did).
	# shellcheck disable=SC2086
	if { [ -f "$dir/build.ninja" ] || meson setup "$dir" $args -Dwerror=true -Dtests=enabled >"$log" 2>&1; } &&
	   ninja -C "$dir" >>"$log" 2>&1; then
		if ! (cd "$dir" && IODMA_FUZZ_COUNT=2000 meson test --print-errorlogs --num-processes 2 \
			--logbase "testlog-cross" --suite unit --suite demo | tail -n 12); then
			failed+=("$a")
		fi
	else
		failed+=("$a-build")
		echo "cross $a: the setup or build failed; the end of $log:"
		tail -n 40 "$log" | sed 's/^/  /'
		if [ -f "$dir/meson-logs/meson-log.txt" ]; then
			echo "cross $a: the end of $dir/meson-logs/meson-log.txt:"
			tail -n 30 "$dir/meson-logs/meson-log.txt" | sed 's/^/  /'
		fi
	fi
	echo "cross $a: $(( $(date +%s) - t0 )) s"
done

echo "== barriers"
barriers=OK
scripts/check-barriers.sh || { barriers=FAIL; failed+=("barriers"); }

# The tests of each architecture's log, the barrier check, and one failure
# for each architecture that did not build (it has no log to count).
tally=(--result "$barriers")
for a in "${arches[@]}"; do tally+=("build-$a/meson-logs/testlog-cross.json"); done
for f in "${failed[@]}"; do
	case $f in *-build) tally+=(--result FAIL) ;; esac
done
testlog_tally cross "${tally[@]}"
[ ${#skipped[@]} -ne 0 ] && echo "cross: skipped architectures: ${skipped[*]}"
if [ ${#failed[@]} -ne 0 ]; then
	echo "cross: FAILED: ${failed[*]}" >&2
	exit 1
fi
