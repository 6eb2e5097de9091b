#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Configures a Meson build tree, or reconfigures it when the installed
# dependencies changed since it was configured.
# Usage: scripts/setup-build.sh DIR [meson setup args...]
# A tree records which optional dependencies it found (cmocka for the suites,
# GLib for bench/).  `make demo` on a new machine configures build/ before
# `make check` installs cmocka; without this the tree would keep its old
# answer.  The state is scripts/deps.sh's fingerprint of the installed
# packages, kept in DIR/.iodma-deps.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$1; shift
state=$(scripts/deps.sh state)
if [ ! -f "$dir/build.ninja" ]; then
	meson setup "$dir" "$@"
elif [ "$(cat "$dir/.iodma-deps" 2>/dev/null)" != "$state" ]; then
	echo "iodma: dependencies changed since $dir was configured; reconfiguring" >&2
	meson setup --reconfigure "$dir" "$@"
fi
echo "$state" > "$dir/.iodma-deps"
