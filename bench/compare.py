"""Compare tinct's Go benchmarks with the PyTorch reference, speed and peak RSS.

Usage:
    /usr/bin/python3 bench/compare.py [--tinct ./bin/tinct] [--rows a,b,...]
                                      [--quick | --steps K] [--rounds R]
                                      [--json FILE]

For every row, these subprocesses run one after another:
    Go               <tinct> bench <args>, once per compute backend
                     (--backends, default go,onednn: $TINCT_BACKEND)
    PyTorch          /usr/bin/python3 testdata/reference/bench.py <args>
    PyTorch tuned    the same, with GLIBC_TUNABLES set so glibc malloc keeps
                     big freed buffers instead of returning them to the OS
                     after every step (which otherwise costs a lot of speed)
With --rounds R (default 3) a row's subprocesses run R times, interleaved
(go, onednn, PyTorch, tuned, go, onednn, ...), and the table gives each one's
median time: on a shared VM the hypervisor lends the cores out in bursts of
seconds to minutes, and a burst that lands on one subprocess of a single
round moves its row by 20-50%. Every round's figures are kept in the JSON.
Each one's peak RSS comes from os.wait4 (ru_maxrss, KiB on Linux) and its
timing from the last stdout line, `<metric>=<float>`. The PyTorch RSS includes
the Python interpreter and the torch libraries. On Linux a child's ru_maxrss
starts at this launcher's own peak RSS (the memory map it was spawned from
counts until exec), so every RSS figure has a floor of roughly 10 MiB; the
floor is measured with /bin/true and printed under the table.

Any failing subprocess has its output printed and makes the script exit 1.
"""

import argparse
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_BENCH_PY = os.path.normpath(os.path.join(HERE, "..", "testdata", "reference", "bench.py"))
TUNED_MALLOC = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967295"

DEFAULT_TRAIN_STEPS = 5
DEFAULT_ROUNDS = 3
QUICK_TRAIN_STEPS = 2


class BenchError(Exception):
    pass


def rows(train_steps):
    """(slug, label, args shared by `tinct bench` and bench.py, metric)."""
    k = str(train_steps)
    return [
        ("train-128-b8", "train 128 b8",
         ["train", "--size", "128", "--batch", "8", "--steps", k], "ms_per_step"),
        ("train-64-b8", "train 64 b8",
         ["train", "--size", "64", "--batch", "8", "--steps", k], "ms_per_step"),
        ("train-128-b16", "train 128 b16",
         ["train", "--size", "128", "--batch", "16", "--steps", k], "ms_per_step"),
        ("forward-128-b1", "forward 128 b1",
         ["forward", "--size", "128"], "ms_per_call"),
        ("colorize-128-20", "colorize 128 20 steps",
         ["colorize", "--size", "128", "--steps", "20"], "ms_per_image"),
    ]


def kill_group(proc):
    """SIGKILL the process group led by proc (the child and anything it started)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_measured(cmd, env, timeout):
    """Run cmd; return (stdout, stderr, peak RSS in MiB). Raise BenchError on failure."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            # Own process group, so a timeout or Ctrl-C can stop all of it.
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, process_group=0)
        except OSError as e:
            raise BenchError(f"cannot start {shlex.join(cmd)}: {e}") from e
        deadline = time.monotonic() + timeout
        try:
            while True:
                # wait4 on this pid: usage of the child and its reaped descendants.
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid == proc.pid:
                    break
                if time.monotonic() > deadline:
                    kill_group(proc)
                    pid, status, usage = os.wait4(proc.pid, 0)
                    proc.returncode = os.waitstatus_to_exitcode(status)
                    raise BenchError(f"timed out after {timeout:.0f} s: {shlex.join(cmd)}")
                time.sleep(0.02)
        except BaseException:
            if proc.returncode is None:
                kill_group(proc)
                os.wait4(proc.pid, 0)
                proc.returncode = -signal.SIGKILL
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)  # stops Popen reaping again
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    if proc.returncode != 0:
        raise BenchError(
            f"exit status {proc.returncode}: {shlex.join(cmd)}\n"
            f"--- stdout ---\n{stdout}--- stderr ---\n{stderr}")
    return stdout, stderr, usage.ru_maxrss / 1024.0


def parse_metric(stdout, stderr, metric, cmd):
    lines = [ln.strip() for ln in stdout.splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    name, sep, value = last.partition("=")
    try:
        if sep and name == metric:
            return float(value)
    except ValueError:
        pass
    raise BenchError(
        f"last stdout line is {last!r}, want {metric}=<float>: {shlex.join(cmd)}\n"
        f"--- stdout ---\n{stdout}--- stderr ---\n{stderr}")


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def relative(arg):
    """A path inside the repository as the repository sees it, so that the
    recorded commands do not name the machine they ran on."""
    if os.path.isabs(arg) and arg.startswith(REPO + os.sep):
        return os.path.relpath(arg, REPO)
    return arg


def steal_ticks():
    """The machine's CPU time stolen by the hypervisor so far, in clock
    ticks (the 8th field of /proc/stat's cpu line); None where unknown."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) if fields[0] == "cpu" and len(fields) > 8 else None
    except (OSError, ValueError):
        return None


def measure(cmd, env, metric, timeout):
    print(f"  $ {shlex.join(cmd)}", file=sys.stderr, flush=True)
    s0, t0 = steal_ticks(), time.monotonic()
    stdout, stderr, rss = run_measured(cmd, env, timeout)
    s1, wall = steal_ticks(), time.monotonic() - t0
    ms = parse_metric(stdout, stderr, metric, cmd)
    # On a shared VM the hypervisor lends the cores out: the share of the
    # machine's CPU time stolen during the run says how far to trust it.
    steal = None
    if s0 is not None and s1 is not None and wall > 0:
        steal = 100.0 * (s1 - s0) / (os.sysconf("SC_CLK_TCK") * wall * (os.cpu_count() or 1))
    note = f"  steal {steal:.1f}%" if steal is not None else ""
    print(f"    {metric}={ms:.3f}  peak RSS {rss:.1f} MiB{note}", file=sys.stderr, flush=True)
    return {"cmd": [relative(a) for a in cmd], "ms": ms, "rss_mib": rss, "steal_pct": steal}


def summarise(runs):
    """One subprocess's rounds as one figure: the median time (the middle
    one, or the mean of the middle two), the largest peak RSS and the
    largest steal share, with every round kept under "rounds"."""
    ms = sorted(r["ms"] for r in runs)
    mid = len(ms) // 2
    median = ms[mid] if len(ms) % 2 else (ms[mid - 1] + ms[mid]) / 2
    steals = [r["steal_pct"] for r in runs if r.get("steal_pct") is not None]
    return {"cmd": runs[0]["cmd"], "ms": median, "rss_mib": max(r["rss_mib"] for r in runs),
            "steal_pct": max(steals) if steals else None, "rounds": runs}


def ratio(a, b):
    return a / b if b > 0 else float("inf")


def markdown(results, backends):
    head = ["row"]
    for b in backends:
        head += [f"Go {b} ms", "RSS MiB"]
    head += ["PyTorch ms", "RSS", "PyTorch tuned ms", "tuned RSS"]
    head += [f"{b}/tuned" for b in backends]
    head += ["max steal %"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for r in results:
        pt, tu = r["torch"], r["torch_tuned"]
        cells = [r["row"]]
        for b in backends:
            go = r["backends"][b]
            cells += [f"{go['ms']:.1f}", f"{go['rss_mib']:.0f}"]
        cells += [f"{pt['ms']:.1f}", f"{pt['rss_mib']:.0f}", f"{tu['ms']:.1f}", f"{tu['rss_mib']:.0f}"]
        cells += [f"{ratio(r['backends'][b]['ms'], tu['ms']):.2f}" for b in backends]
        steals = [m.get("steal_pct") for m in [pt, tu] + [r["backends"][b] for b in backends]]
        steals = [x for x in steals if x is not None]
        cells += [f"{max(steals):.0f}" if steals else "?"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(
        description="Compare `tinct bench` with the PyTorch reference (speed and peak RSS).")
    ap.add_argument("--tinct", default="./bin/tinct", help="Go binary (default ./bin/tinct)")
    ap.add_argument("--python", default="/usr/bin/python3", help="interpreter with torch")
    ap.add_argument("--bench-py", default=DEFAULT_BENCH_PY, help="PyTorch bench script")
    ap.add_argument("--rows", default="",
                    help="comma-separated subset of: " + ", ".join(s for s, *_ in rows(0)))
    ap.add_argument("--quick", action="store_true",
                    help=f"train rows time {QUICK_TRAIN_STEPS} steps instead of {DEFAULT_TRAIN_STEPS}")
    ap.add_argument("--steps", type=int, default=None, help="timed steps for train rows (overrides --quick)")
    ap.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS,
                    help=f"times each subprocess of a row runs, interleaved; the table gives medians (default {DEFAULT_ROUNDS})")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds allowed per subprocess")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--backends", default="go,onednn",
                    help="tinct compute backends to time, comma-separated ($TINCT_BACKEND; default go,onednn)")
    args = ap.parse_args()

    k = args.steps if args.steps is not None else (QUICK_TRAIN_STEPS if args.quick else DEFAULT_TRAIN_STEPS)
    table = rows(k)
    if args.rows:
        def norm(s):
            return "-".join(s.lower().split())
        by_name = {}
        for row in table:
            by_name[row[0]] = row
            by_name[norm(row[1])] = row
        chosen = []
        for name in args.rows.split(","):
            row = by_name.get(norm(name))
            if row is None:
                ap.error(f"unknown row {name!r}; choose from {', '.join(r[0] for r in table)}")
            if row not in chosen:
                chosen.append(row)
        table = chosen

    if args.rounds < 1:
        ap.error("--rounds: at least 1")
    backends = [b for b in args.backends.split(",") if b]
    if not backends:
        ap.error("--backends: name at least one")
    plain_env = dict(os.environ)
    plain_env.pop("GLIBC_TUNABLES", None)
    tuned_env = dict(plain_env, GLIBC_TUNABLES=TUNED_MALLOC)

    results = []
    try:
        floor = run_measured(["/bin/true"], plain_env, 60)[2]
        for slug, label, bench_args, metric in table:
            print(f"[{label}]", file=sys.stderr, flush=True)
            py_cmd = [args.python, args.bench_py] + bench_args
            runs = {b: [] for b in backends}
            runs["torch"], runs["torch_tuned"] = [], []
            for rnd in range(args.rounds):
                if args.rounds > 1:
                    print(f"  round {rnd + 1}/{args.rounds}", file=sys.stderr, flush=True)
                for b in backends:
                    runs[b].append(measure([args.tinct, "bench"] + bench_args, dict(plain_env, TINCT_BACKEND=b),
                                           metric, args.timeout))
                runs["torch"].append(measure(py_cmd, plain_env, metric, args.timeout))
                runs["torch_tuned"].append(measure(py_cmd, tuned_env, metric, args.timeout))
            gos = {}
            for b in backends:
                gos[b] = summarise(runs[b])
                gos[b]["backend"] = b
            go = gos[backends[0]]
            pt, tu = summarise(runs["torch"]), summarise(runs["torch_tuned"])
            results.append({
                "row": label, "slug": slug, "metric": metric,
                "go": go, "backends": gos, "torch": pt, "torch_tuned": tu,
                "go_over_torch": ratio(go["ms"], pt["ms"]),
                "go_over_tuned": ratio(go["ms"], tu["ms"]),
            })
    except BenchError as e:
        print(f"compare: error: {e}", file=sys.stderr)
        return 1

    print(markdown(results, backends))
    print(f"\nRSS floor inherited from the launcher (ru_maxrss of /bin/true): {floor:.0f} MiB; "
          f"train rows time {k} steps; median of {args.rounds} interleaved round(s).")
    if args.json:
        doc = {
            "train_steps": k,
            "rounds": args.rounds,
            "rss_floor_mib": floor,
            "glibc_tunables_tuned": TUNED_MALLOC,
            "host": {"machine": platform.machine(), "cpus": os.cpu_count(),
                     "python": platform.python_version()},
            "rows": results,
        }
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
