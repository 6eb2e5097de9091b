#!/bin/sh
# SPDX-License-Identifier: MIT
# Compile tests/cxx/test_headers.cpp with one C++ compiler in strict C++17
# and run it against the built shared library.
# Usage: compile-run.sh CXX SOURCE INCLUDE_DIR SHARED_LIB OUT [SANITIZE]
# SANITIZE: the build's b_sanitize value (the library may need its runtime).
set -eu
cxx=$1 src=$2 inc=$3 lib=$4 out=$5 san=${6:-none}
sanflag=
if [ "$san" != none ]; then sanflag=-fsanitize=$san; fi
"$cxx" -std=c++17 -pedantic-errors -Wall -Wextra -Werror -I"$inc" $sanflag \
	-o "$out" "$src" "$lib" -Wl,-rpath,"$(dirname "$lib")"
exec "$out"
