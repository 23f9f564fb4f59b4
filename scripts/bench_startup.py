"""Start-up time of the command line, and a check that it answers without importing torch or lightning.

What it measures: the wall time of ``rnnlab-train --help`` and ``rnnlab-train --cfg job`` run as subprocesses
(median of ``--runs`` runs after ``--warmup`` discarded ones), next to ``python -c "import lightning"``,
``python -c "import torch"`` and ``python -c pass`` for reference. It then runs the entry point once more for
each command in a child interpreter and lists which heavy packages ended up in ``sys.modules``, and shows how
much of ``--help`` is imports (``python -X importtime``). The ``others`` column is the CPU (in cores) that other
processes used while a command was timed; on a small machine a busy neighbour inflates the times.

Target: ``rnnlab-train --help`` under 0.5 s (it starts no Hydra), and neither command imports torch or lightning.

    .venv/bin/python scripts/bench_startup.py
    .venv/bin/python scripts/bench_startup.py --runs 9 --warmup 2 --top 12

The commands run in a temporary working directory, so nothing is written into the checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FORBIDDEN = ("torch", "lightning")  # the target: neither may be imported by --help or --cfg job
HEAVY = (*FORBIDDEN, "lightning_fabric", "pytorch_lightning", "torchmetrics", "tensorboard", "numpy", "pandas")

# Runs rnnlab-train's entry point in-process (as the console script does) and reports the loaded packages.
PROBE = """
import contextlib, io, json, sys
cli_args, heavy = json.loads(sys.argv[1]), json.loads(sys.argv[2])
sys.argv = ["rnnlab-train", *cli_args]
from rnnlab.cli import train_main
code = 0
with contextlib.redirect_stdout(io.StringIO()) as out:
    try:
        train_main()
    except SystemExit as exit_:
        code = exit_.code or 0
loaded = sorted({m.split(".")[0] for m in sys.modules} & set(heavy))
print(json.dumps({"exit": code, "loaded": loaded, "stdout_chars": len(out.getvalue())}))
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5, help="timed runs per command (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    p.add_argument("--target", type=float, default=0.5, help="--help must take less than this, seconds (0.5)")
    p.add_argument("--top", type=int, default=5, help="slowest top-level imports of --help to list (default 5)")
    p.add_argument("--exe", default=None, help="rnnlab-train to run (default: next to this Python, else on PATH)")
    p.add_argument("--no-reference", action="store_true", help="skip the import torch / lightning references")
    p.add_argument("--strict", action="store_true", help="exit with status 1 when a target is missed")
    args = p.parse_args(argv)
    if args.runs < 1 or args.warmup < 0:
        p.error("need --runs >= 1 and --warmup >= 0")
    return args


def find_exe(explicit: str | None) -> str:
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "rnnlab-train"
    if beside.is_file():
        return str(beside)
    found = shutil.which("rnnlab-train")
    if found is None:
        raise SystemExit("bench_startup: rnnlab-train not found; install the project (pip install -e .) or --exe")
    return found


def _cpu_now() -> tuple[float, float, float] | None:
    """(wall s, CPU s busy on the whole machine, CPU s of this process and its finished children); Linux only."""
    try:
        fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except OSError:
        return None
    busy = (sum(fields[:3]) + sum(fields[5:8])) / os.sysconf("SC_CLK_TCK")  # user nice system, irq softirq steal
    t = os.times()
    return time.perf_counter(), busy, t.user + t.system + t.children_user + t.children_system


def other_cores(start: tuple[float, float, float] | None) -> float | None:
    """CPU used by other processes since ``start``, in cores: they slow the timed commands down."""
    end = _cpu_now()
    if start is None or end is None:
        return None
    wall, busy, own = (b - a for a, b in zip(start, end, strict=True))
    return max(0.0, (busy - own) / wall)


def time_command(cmd: list[str], runs: int, warmup: int, cwd: str) -> list[float]:
    times = []
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
        dt = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"bench_startup: {' '.join(cmd)} exited with {proc.returncode}:\n{proc.stderr[-2000:]}")
        if i >= warmup:
            times.append(dt)
    return times


def probe_imports(cli_args: list[str], cwd: str) -> dict:
    cmd = [sys.executable, "-c", PROBE, json.dumps(cli_args), json.dumps(HEAVY)]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"bench_startup: import probe failed for {cli_args}:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def top_level_imports(exe: str, cwd: str) -> list[tuple[float, float, str]]:
    """(cumulative s, self s, package) of every top-level import of ``rnnlab-train --help``, slowest first."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", exe, "--help"], cwd=cwd, capture_output=True, text=True, check=False
    )
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "[us]" in line:
            continue
        own, cumulative, name = (part for part in line.removeprefix("import time:").split("|"))
        if name.startswith(" ") and not name[1:].startswith(" "):  # depth 0: one space after the bar
            rows.append((int(cumulative) / 1e6, int(own) / 1e6, name.strip()))
    return sorted(rows, reverse=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exe = find_exe(args.exe)
    py = sys.executable
    cwd = tempfile.mkdtemp(prefix="rnnlab-bench-startup-")
    commands: list[tuple[str, list[str]]] = [
        ("rnnlab-train --help", [exe, "--help"]),
        ("rnnlab-train --cfg job", [exe, "--cfg", "job"]),
    ]
    if not args.no_reference:
        commands += [
            ('python -c "pass"', [py, "-c", "pass"]),
            ('python -c "import torch"', [py, "-c", "import torch"]),
            ('python -c "import lightning"', [py, "-c", "import lightning"]),
        ]
    try:
        print(f"python {sys.version.split()[0]} ({py}); rnnlab-train: {exe}")
        print(f"{args.warmup} warm-up + {args.runs} timed runs each; load average {os.getloadavg()[0]:.2f}", flush=True)
        results, others = {}, {}
        for label, cmd in commands:
            start = _cpu_now()
            results[label] = time_command(cmd, args.runs, args.warmup, cwd)
            others[label] = other_cores(start)
        probes = {label: probe_imports(cmd[1:], cwd) for label, cmd in commands[:2]}
        imports = top_level_imports(exe, cwd)
    finally:
        shutil.rmtree(cwd, ignore_errors=True)

    print()
    header = f"{'command':<32} {'median s':>8} {'min s':>7} {'max s':>7} {'others':>6}  heavy packages imported"
    print(header)
    print("-" * (len(header) + 12))
    for label, times in results.items():
        loaded = (", ".join(probes[label]["loaded"]) or "none") if label in probes else ""
        other = "n/a" if others[label] is None else f"{others[label]:.2f}"
        print(f"{label:<32} {statistics.median(times):8.3f} {min(times):7.3f} {max(times):7.3f} {other:>6}  {loaded}")
    print("others = cores that other processes used meanwhile (above ~0.3 the times are inflated; run again)")
    if imports:
        total = sum(row[0] for row in imports)
        help_median = statistics.median(results["rnnlab-train --help"])
        print()
        print(
            f"rnnlab-train --help: {total:.3f} s of its {help_median:.3f} s go to imports (python -X importtime, "
            "one run);\nthe rest is the interpreter starting and rendering the help template (conf/hydra/default.yaml)."
        )
        if args.top > 0:
            print(f"slowest top-level imports ({args.top} shown):")
            for cumulative, own, name in imports[: args.top]:
                print(f"  {cumulative:6.3f} s cumulative  {own:6.3f} s self  {name}")

    print()
    help_median = statistics.median(results["rnnlab-train --help"])
    ok = help_median < args.target
    print(f"target --help < {args.target:.1f} s: median {help_median:.3f} s: {'met' if ok else 'NOT met'}")
    for label, probe in probes.items():
        bad = [m for m in probe["loaded"] if m in FORBIDDEN]
        ok &= not bad and probe["exit"] == 0
        verdict = "met" if not bad else f"NOT met ({', '.join(bad)} imported)"
        print(f"target {label}: no torch / lightning import: {verdict} (exit status {probe['exit']})")
    return 0 if ok or not args.strict else 1


if __name__ == "__main__":
    sys.exit(main())
