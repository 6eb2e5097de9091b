# SPDX-License-Identifier: MIT
# Sourced (not run) by scripts/check.sh and scripts/check-cross.sh: the one
# closing line "NAME: N passed, N failed, N skipped" that CI reads, counted
# over Meson's JSON test logs (meson-logs/testlog-*.json, one test per line).
#
# testlog_tally NAME [--result OK|SKIP|FAIL]... [JSON...]
#   Each test in the JSON logs counts by its result: OK and EXPECTEDFAIL pass,
#   SKIP skips, anything else (FAIL, TIMEOUT, UNEXPECTEDPASS, ERROR) fails.
#   Each --result adds one tier judged outside Meson (e.g. the deb build).
#   A log that does not exist is ignored (its tier did not run).
testlog_tally() {
	local name=$1
	shift
	python3 - "$name" "$@" <<'PY'
import json, os, sys
name, args = sys.argv[1], sys.argv[2:]
p = f = s = 0

def count(r):
    global p, f, s
    if r in ("OK", "EXPECTEDFAIL"):
        p += 1
    elif r == "SKIP":
        s += 1
    else:
        f += 1

i = 0
while i < len(args):
    if args[i] == "--result":
        count(args[i + 1])
        i += 2
        continue
    path = args[i]
    i += 1
    if not os.path.exists(path):
        continue
    for line in open(path):
        line = line.strip()
        if line:
            count(json.loads(line).get("result"))
print(f"{name}: {p} passed, {f} failed, {s} skipped")
PY
}
