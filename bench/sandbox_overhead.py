"""What the sandbox costs a process: start-up, CPU-bound work, file-system calls.

    .venv/bin/python bench/sandbox_overhead.py [--repeat 7]

Each probe runs the same Python code unsandboxed and in the platform's sandbox (the reaper shim,
bubblewrap, the sandbox uid when root, the cpu.standard limits), alternating, --repeat times:
  * start: wall time of `python -c pass` from spawn to exit;
  * cpu: CPU time (time.process_time, single thread) of a fixed pure-Python loop;
  * files: CPU time of 20,000 stat + open + read of a file in a bound folder.
CPU time rather than wall time, because a shared machine slows a run by whatever else runs,
but not the work a single thread does. Medians and the sandboxed/unsandboxed ratios print last.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.config import get_settings
from app.procs import sandbox, supervise
from app.procs.environ import build_env
from app.trainings.runtimes import CPU_STANDARD, sandbox_limits

PROBES = {
    "cpu": "import json, time\nt = time.process_time()\nn = 0\nfor i in range(8_000_000):\n"
           "    n += i % 7\nprint(json.dumps({'s': time.process_time() - t}))\n",
    "files": "import json, os, sys, time\np = os.path.join(sys.argv[1], 'f.txt')\n"
             "t = time.process_time()\nfor _ in range(20_000):\n    os.stat(p)\n"
             "    with open(p) as f:\n        f.read()\n"
             "print(json.dumps({'s': time.process_time() - t}))\n",
    "start": "pass\n",
}


def once(probe: str, folder: Path, *, sandboxed: bool) -> float:
    """Seconds: the probe's own CPU figure, or the wall time of the whole start for `start`."""
    home = folder / "home"
    env = build_env({}, home=home, runtime_is_mindspore=False, python=sys.executable)
    spec = sandbox.SandboxSpec(cwd=folder, pythons=(sys.executable,), ro_paths=(folder / "in",),
                               rw_paths=(home,), limits=sandbox_limits(CPU_STANDARD))
    argv = [sys.executable, "-c", PROBES[probe], str(folder / "in")]
    began = time.perf_counter()
    proc = supervise.start(argv, cwd=folder, env=env, stdout=subprocess.PIPE, grace_s=1.0,
                           sandbox=spec if sandboxed else None)
    out, _ = proc.communicate(timeout=300)
    wall = time.perf_counter() - began
    if proc.returncode != 0:
        raise RuntimeError(f"{probe} failed with code {proc.returncode}")
    return wall if probe == "start" else float(json.loads(out)["s"])


def main() -> None:
    """Run every probe in and out of the sandbox and print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sandbox-overhead-") as tmp:
        folder = Path(tmp)
        os.environ["TRAINYARD_DATA_DIR"] = str(folder / "data")
        get_settings.cache_clear()
        works, why = sandbox.probe()
        if not works:
            raise SystemExit(f"the sandbox cannot run here: {why}")
        (folder / "in").mkdir()
        (folder / "in" / "f.txt").write_text("x" * 4096)
        sandbox.make_writable(folder / "home")
        results: dict[tuple[str, bool], list[float]] = {}
        for _ in range(args.repeat):
            for probe in PROBES:
                for sandboxed in (False, True):
                    value = once(probe, folder, sandboxed=sandboxed)
                    results.setdefault((probe, sandboxed), []).append(value)
    print(f"median of {args.repeat}, load average {os.getloadavg()[0]:.1f}")
    for probe in PROBES:
        plain, boxed = median(results[(probe, False)]), median(results[(probe, True)])
        what = "wall s" if probe == "start" else "CPU s"
        print(f"  {probe:6s} unsandboxed {plain:8.4f} {what}   sandboxed {boxed:8.4f} {what}"
              f"   ratio {boxed / plain:.3f}")


if __name__ == "__main__":
    main()
