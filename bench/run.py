#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench/run.py - run every benchmark and print the one table of `make bench`.

Usage: bench/run.py BENCH_DIR        (BENCH_DIR: <build>/bench)
Environment: IODMA_BENCH_IR=0 skips the callgrind pass.

1. Each bench_* executable runs once; it prints ROW lines (bench/bench.h:
   figure, iodma value, baseline measured in the same run, ratio, target,
   PASS/MISS; each value the median of 5 runs) and NOTE lines.
2. When valgrind is installed, the benchmarks with Ir keys run again with
   --ir under `valgrind --tool=callgrind`.  In that mode each measured loop
   runs once with a fixed op count between CALLGRIND_ZERO_STATS and
   CALLGRIND_DUMP_STATS_AT(key), so each dump holds the instructions of that
   loop alone (setup and teardown are outside every dump) and the program
   prints "IR key ops".  Ir/op = the dump's summary / ops.  Instruction
   counts repeat from run to run where times do not, so they are the figure
   to compare across commits.  Rows whose target is a ratio bar
   (ratio<=X) are also judged on the Ir ratio against the same bar; rows
   whose target is an absolute Ir bar (Ir<=X) are judged on their Ir/op.

The script exits 0 whatever the verdicts; non-zero only when a benchmark
itself fails.
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

ORDER = ["bench_xlate", "bench_dma", "bench_domain", "bench_mt", "bench_iova"]
IR_BENCHES = ["bench_xlate", "bench_dma", "bench_domain", "bench_iova"]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run_rows(exe):
    rows, notes = [], []
    p = subprocess.run([exe], stdout=subprocess.PIPE, text=True)
    for line in p.stdout.splitlines():
        f = line.split("\t")
        if f[0] == "ROW" and len(f) == 12:
            rows.append(dict(id=f[1], fig=f[2], unit=f[3], val=f[4], bname=f[5],
                             base=f[6], ratio=f[7], target=f[8], verdict=f[9],
                             ir=f[10], irb=f[11]))
        elif f[0] == "NOTE":
            notes.append(" ".join(f[1:]))
    return p.returncode, rows, notes


def run_ir(exe, outdir):
    """Ir per op of every key the program dumps under callgrind."""
    name = os.path.basename(exe)
    out = os.path.join(outdir, name + ".cg")
    p = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
                        exe, "--ir"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        log(p.stderr[-2000:])
        return p.returncode, {}
    ops = {}
    for line in p.stdout.splitlines():
        f = line.split("\t")
        if f[0] == "IR" and len(f) == 3:
            ops[f[1]] = int(f[2])
    ir = {}
    for path in glob.glob(out + ".*"):
        key, total = None, None
        with open(path) as fh:
            for line in fh:
                m = re.match(r"desc: Trigger: Client Request: (\S+)", line)
                if m:
                    key = m.group(1)
                m = re.match(r"summary: (\d+)", line)
                if m:
                    total = int(m.group(1))
                if key and total is not None:
                    break
        if key in ops and total is not None and ops[key] > 0:
            ir[key] = total / ops[key]
    return 0, ir


def fmt_num(s):
    try:
        v = float(s)
    except ValueError:
        return s
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return "%.0f" % v
    if abs(v) >= 10:
        return "%.1f" % v
    return "%.2f" % v


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    bdir = sys.argv[1]
    failed = []
    rows, notes = [], []
    only = [x for x in os.environ.get("IODMA_BENCH_ONLY", "").split(",") if x]
    order = [n for n in ORDER if not only or n in only]
    for name in order:
        exe = os.path.join(bdir, name)
        if not os.access(exe, os.X_OK):
            failed.append(name + " (not built)")
            continue
        log("== %s" % name)
        rc, r, n = run_rows(exe)
        rows += r
        notes += n
        if rc != 0:
            failed.append("%s (exit %d)" % (name, rc))

    ir = {}
    want_ir = os.environ.get("IODMA_BENCH_IR", "1") != "0"
    if want_ir and shutil.which("valgrind"):
        with tempfile.TemporaryDirectory(prefix="iodma-cg-") as tmp:
            for name in IR_BENCHES:
                if only and name not in only:
                    continue
                exe = os.path.join(bdir, name)
                if not os.access(exe, os.X_OK):
                    continue
                log("== %s --ir under callgrind" % name)
                rc, got = run_ir(exe, tmp)
                ir.update(got)
                if rc != 0:
                    failed.append("%s --ir under callgrind (exit %d)" % (name, rc))
    elif want_ir:
        notes.append("valgrind not installed: no Ir/op column")

    head = ["figure", "iodma", "baseline", "base", "unit", "ratio", "target",
            "verdict", "Ir/op", "base Ir/op", "Ir ratio"]
    table = []
    for r in rows:
        iri = ir.get(r["ir"])
        irb = ir.get(r["irb"])
        irr = "-"
        if iri is not None and irb is not None and irb > 0:
            q = iri / irb
            irr = "%.3g" % q
            m = re.match(r"ratio<=([\d.]+)$", r["target"])
            if m:
                irr += " PASS" if q <= float(m.group(1)) else " MISS"
        m = re.match(r"Ir<=([\d.]+)$", r["target"])
        if m and iri is not None:
            # An absolute Ir/op bar (issue 12): the verdict is the Ir's.
            r["verdict"] = "PASS" if iri <= float(m.group(1)) else "MISS"
        table.append([r["fig"], fmt_num(r["val"]), r["bname"], fmt_num(r["base"]),
                      r["unit"], r["ratio"], r["target"], r["verdict"],
                      "%.0f" % iri if iri is not None else "-",
                      "%.0f" % irb if irb is not None else "-", irr])
    w = [max(len(x[i]) for x in table + [head]) for i in range(len(head))]
    right = {1, 3, 5, 8, 9}

    def line(cells):
        return "  ".join(c.rjust(w[i]) if i in right else c.ljust(w[i])
                         for i, c in enumerate(cells)).rstrip()

    print("iodma bench (issue 8): medians of 5 runs; baseline measured in the same run;")
    print("ratio = iodma/baseline (memcpy/bounce for bounce rows, with/alone for rates)")
    print(line(head))
    print(line(["-" * x for x in w]))
    for t in table:
        print(line(t))
    for n in notes:
        print("note: " + n)
    npass = sum(1 for r in rows if r["verdict"] == "PASS")
    nmiss = sum(1 for r in rows if r["verdict"] == "MISS")
    print("targets: %d PASS, %d MISS (information only)" % (npass, nmiss))
    if failed:
        print("FAILED: " + ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
