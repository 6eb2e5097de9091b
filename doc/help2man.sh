#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# One section 1 page from the tool's own --help by help2man.
# Usage: doc/help2man.sh HELP2MAN TOOL PAGE SUBCOMMAND NAME INCLUDE OUTPUT
#   PAGE: iodma or iodma-SUB; SUBCOMMAND: '' or 'SUB ' (its --help is
#   `TOOL SUB --help`); NAME: the one-line description.
set -euo pipefail
help2man=$1 tool=$2 page=$3 sub=$4 name=$5 include=$6 output=$7
"$help2man" --no-info --no-discard-stderr --name="$name" \
	--help-option="${sub}--help" --version-option=--version \
	--include="$include" --output="$output.tmp" "$tool"
if [ -n "$sub" ]; then
	# help2man names the page after the program: the subcommand's page is
	# iodma-SUB, as git-commit(1) is git's.
	upper=$(printf '%s' "$page" | tr '[:lower:]-' '[:upper:]-')
	sed -i -e "s/^\.TH IODMA /.TH $upper /" \
		-e "/^\.SH NAME/{n;s/^iodma /${page//-/\\\\-} /}" "$output.tmp"
fi
mv "$output.tmp" "$output"
