"""How long a user waits before a command does anything: ``resnetlab --help``, ``import resnetlab``,
``resnetlab list``, each against ``python -c "import torch"`` measured in the same run.

Each case is a fresh interpreter (what a user starts). One untimed warm-up round fills the page
cache; then ``--repeats`` rounds run every case once, the order rotating from round to round, so
that load from other processes hits all of them alike. Reported: the median wall time of each
case with its min..max spread, and its ratio to ``import torch`` (the median of the per-round
ratios, with their spread), plus the machine and its load average before and after.

    .venv/bin/python benchmarks/startup.py [--repeats 9] [--json]

The goals (issue 22): ``resnetlab --help`` under 1 s, and ``import resnetlab`` /
``resnetlab list`` no slower than ``import torch`` + 0.5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

#: the cases, as argv lists: the ``resnetlab`` console script beside this Python (what a user runs)
PYTHON = sys.executable
SCRIPT = str(Path(PYTHON).with_name("resnetlab"))
CASES = {
    "import torch": [PYTHON, "-c", "import torch"],
    "resnetlab --help": [SCRIPT, "--help"],
    "import resnetlab": [PYTHON, "-c", "import resnetlab"],
    "resnetlab list": [SCRIPT, "list"],
}
BASELINE = "import torch"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _time(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def measure(repeats: int) -> dict:
    """Wall seconds of every case over ``repeats`` rotating rounds, after one warm-up round."""
    names = list(CASES)
    load_before = os.getloadavg()[0]
    for name in names:
        _time(CASES[name])
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            seconds[name].append(_time(CASES[name]))
    rows = {}
    for name in names:
        ratios = [s / b for s, b in zip(seconds[name], seconds[BASELINE])]
        rows[name] = {"median_s": round(statistics.median(seconds[name]), 3),
                      "min_s": round(min(seconds[name]), 3), "max_s": round(max(seconds[name]), 3),
                      "ratio_to_torch": round(statistics.median(ratios), 3),
                      "ratio_min": round(min(ratios), 3), "ratio_max": round(max(ratios), 3),
                      "minus_torch_s": round(statistics.median(seconds[name]) - statistics.median(seconds[BASELINE]), 3)}
    return {"cases": rows, "repeats": repeats, "python": platform.python_version(), "cpu": _cpu(),
            "cores": os.cpu_count(), "load_avg_1min_before": round(load_before, 2),
            "load_avg_1min_after": round(os.getloadavg()[0], 2), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def table(result: dict) -> str:
    """The result as a markdown table."""
    lines = ["| command | median | min..max | ratio to `import torch` (min..max) | minus `import torch` |",
             "|---|---:|---:|---:|---:|"]
    for name, row in result["cases"].items():
        lines.append(f"| `{name}` | {row['median_s']:.2f} s | {row['min_s']:.2f}..{row['max_s']:.2f} s | "
                     f"{row['ratio_to_torch']:.2f} ({row['ratio_min']:.2f}..{row['ratio_max']:.2f}) | "
                     f"{row['minus_torch_s']:+.2f} s |")
    lines.append(f"\n{result['repeats']} rounds after one warm-up round; {result['cpu']}, {result['cores']} cores, "
                 f"Python {result['python']}; load average {result['load_avg_1min_before']} before, "
                 f"{result['load_avg_1min_after']} after; {result['date']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9, help="timed rounds (default 9)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args()
    result = measure(args.repeats)
    print(json.dumps(result) if args.json else table(result))


if __name__ == "__main__":
    main()
