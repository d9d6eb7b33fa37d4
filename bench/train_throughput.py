"""Training throughput of the ResNet50 sample: as the platform runs it, plain MindSpore, PyTorch.

    .venv/bin/python bench/train_throughput.py [--repeat 2] [--batch-size 64]

Each measurement runs in its own process, one after the other:
  (a) samples/resnet50/train/train_dir/train.py run like the platform runs it, on a generated
      CIFAR-10 binary dataset; images/s from its own step-time log lines (first line, which
      includes graph compilation, left out);
  (s) the same, inside the platform's sandbox (app.procs: the reaper shim, bubblewrap, the
      sandbox uid when root, the cpu.standard limits, the environment the platform builds);
  (p) the same as (s) without bubblewrap: what the worker runs with TRAINYARD_SANDBOX=off;
  (b) the same network and batch in a minimal MindSpore TrainOneStepCell loop
      (bench/ms_plain_step.py);
  (c) the same network in PyTorch on the CPU (bench/torch_resnet50.py), in bench/.venv-torch,
      which this script creates when missing (pip install -r bench/requirements-torch.txt).
(a) and (b) get ONEDNN_MAX_CPU_ISA (AVX2 unless --isa says otherwise), as the platform sets it;
(c) runs with PyTorch's defaults. With --repeat N every measurement runs N times, interleaved,
and the best run counts (other processes on a shared machine only ever slow a run down).
For (a) and (s) it also prints the CPU time of the whole process tree (user + system, from
getrusage): the same work costs the same CPU whatever else runs, so on a busy machine the CPU
ratio shows the sandbox's cost better than images/s do.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import venv
from pathlib import Path
from statistics import mean

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
TRAIN_DIR = ROOT / "samples" / "resnet50" / "train" / "train_dir"
TORCH_VENV = BENCH / ".venv-torch"
sys.path.insert(0, str(ROOT))

from tests.cifar_data import write_cifar_binary  # noqa: E402

STEP_LINE = re.compile(r"^Epoch:\[\s*\d+/\s*\d+\], step:\[\s*(\d+)/\s*\d+\], .*time: ([\d.]+) ms")


def torch_python() -> Path:
    """The bench-only PyTorch interpreter, created on first use."""
    python = TORCH_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {TORCH_VENV} (PyTorch baseline only) ...", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(TORCH_VENV)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-r",
                        str(BENCH / "requirements-torch.txt")], check=True)
    return python


def run(argv: list[str], env: dict[str, str], cwd: Path = ROOT, timeout: float = 900) -> str:
    """Run a measurement process and return its stdout (raising with its output on failure)."""
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{result.stdout[-2000:]}"
                           f"\n{result.stderr[-4000:]}")
    return result.stdout


def last_json(output: str) -> dict[str, float]:
    """The JSON object a helper printed last."""
    return json.loads([line for line in output.splitlines() if line.startswith("{")][-1])


CPU_SECONDS: dict[str, list[float]] = {"a": [], "s": [], "p": []}


def children_cpu_s() -> float:
    """User + system CPU seconds of every waited-for descendant so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure_sample(args: argparse.Namespace, data: Path, out: Path, env: dict[str, str]) -> float:
    """(a) images/s of train.py from its log lines, compile line excluded."""
    steps = args.steps + args.log_every
    cpu = children_cpu_s()
    log = run([sys.executable, "train.py", f"--data_url={data}", f"--output_url={out}",
               "--epochs=1", f"--batch_size={args.batch_size}",
               f"--train_limit={steps * args.batch_size}", f"--test_limit={args.batch_size}",
               f"--log_every={args.log_every}", *args.train_arg], env, cwd=TRAIN_DIR)
    CPU_SECONDS["a"].append(children_cpu_s() - cpu)
    times = [(int(m[1]), float(m[2])) for line in log.splitlines()
             if (m := STEP_LINE.match(line))]
    measured = [ms for step, ms in times if step > args.log_every]
    if not measured:
        raise RuntimeError(f"no step-time lines after the first in:\n{log[-2000:]}")
    return args.batch_size * 1000 / mean(measured)


def measure_sandboxed(args: argparse.Namespace, data: Path, out: Path, isa: str, *,
                      sandboxed: bool = True) -> float:
    """(s) images/s of train.py in the sandbox, set up as the worker sets up a training; (p)
    the same start without the sandbox."""
    from app.procs import sandbox, supervise
    from app.procs.environ import build_env
    from app.trainings.runtimes import CPU_STANDARD, sandbox_limits

    if not sandbox.probe()[0]:
        raise RuntimeError(f"the sandbox cannot run here: {sandbox.probe()[1]}")
    home = out.with_name(f"{out.name}-home")
    (home / "tmp").mkdir(parents=True)
    sandbox.make_writable(out, home)
    env = build_env({}, home=home, runtime_is_mindspore=True, python=sys.executable,
                    extra={"ONEDNN_MAX_CPU_ISA": isa} if isa else None)
    spec = sandbox.SandboxSpec(cwd=TRAIN_DIR, pythons=(sys.executable,),
                               ro_paths=(TRAIN_DIR, data), rw_paths=(out, home),
                               limits=sandbox_limits(CPU_STANDARD))
    steps = args.steps + args.log_every
    argv = [sys.executable, str(TRAIN_DIR / "train.py"), f"--data_url={data}",
            f"--output_url={out}", "--epochs=1", f"--batch_size={args.batch_size}",
            f"--train_limit={steps * args.batch_size}", f"--test_limit={args.batch_size}",
            f"--log_every={args.log_every}", *args.train_arg]
    log_path = home / "log.txt"
    cpu = children_cpu_s()
    with open(log_path, "wb") as log:
        proc = supervise.start(argv, cwd=TRAIN_DIR, env=env, stdout=log, grace_s=5.0,
                               sandbox=spec if sandboxed else None)
    if proc.wait(timeout=900) != 0:
        raise RuntimeError(f"the sandboxed run failed:\n{log_path.read_text()[-4000:]}")
    CPU_SECONDS["s" if sandboxed else "p"].append(children_cpu_s() - cpu)
    times = [(int(m[1]), float(m[2])) for line in log_path.read_text().splitlines()
             if (m := STEP_LINE.match(line))]
    measured = [ms for step, ms in times if step > args.log_every]
    if not measured:
        raise RuntimeError(f"no step-time lines after the first in:\n{log_path.read_text()}")
    return args.batch_size * 1000 / mean(measured)


def measure_plain(args: argparse.Namespace, env: dict[str, str]) -> float:
    """(b) images/s of the network in a minimal MindSpore loop."""
    argv = [sys.executable, str(BENCH / "ms_plain_step.py"), f"--batch_size={args.batch_size}",
            f"--steps={args.steps}", *args.plain_arg]
    return last_json(run(argv, env))["images_per_s"]


def measure_torch(args: argparse.Namespace) -> float:
    """(c) images/s of the same network in PyTorch (its default threads and ISA)."""
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
    argv = [str(torch_python()), str(BENCH / "torch_resnet50.py"),
            f"--batch_size={args.batch_size}", f"--steps={args.steps}", *args.torch_arg]
    return last_json(run(argv, env))["images_per_s"]


def main() -> None:
    """Measure (a), (b), (c) and print images/s and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", dest="batch_size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30, help="measured steps per run")
    parser.add_argument("--log-every", dest="log_every", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--isa", default="AVX2", help="ONEDNN_MAX_CPU_ISA for (a) and (b); "
                        "'' for oneDNN's default")
    parser.add_argument("--only", default="abc", help="which measurements, e.g. 'ab', 'as'")
    parser.add_argument("--train-arg", dest="train_arg", action="append", default=[],
                        help="extra train.py argument for (a), e.g. --train-arg=--jit_level=O1")
    parser.add_argument("--plain-arg", dest="plain_arg", action="append", default=[],
                        help="extra ms_plain_step.py argument for (b), e.g. "
                        "--plain-arg=--nchw")
    parser.add_argument("--torch-arg", dest="torch_arg", action="append", default=[],
                        help="extra torch_resnet50.py argument for (c), e.g. "
                        "--torch-arg=--optimizer=momentum")
    args = parser.parse_args()
    ms_env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
    if args.isa:
        ms_env["ONEDNN_MAX_CPU_ISA"] = args.isa
    if "c" in args.only:
        torch_python()
    results: dict[str, list[float]] = {key: [] for key in args.only}
    with tempfile.TemporaryDirectory(prefix="train-throughput-") as tmp:
        os.environ["TRAINYARD_DATA_DIR"] = str(Path(tmp) / "data")  # the sandbox's passwd file
        data = write_cifar_binary(Path(tmp) / "cifar-10-batches-bin", 10_000, 10_000, seed=0)
        for attempt in range(1, args.repeat + 1):
            if "a" in args.only:
                results["a"].append(measure_sample(args, data, Path(tmp) / f"out{attempt}", ms_env))
            if "p" in args.only:
                results["p"].append(measure_sandboxed(args, data, Path(tmp) / f"pl{attempt}",
                                                      args.isa, sandboxed=False))
            if "s" in args.only:
                results["s"].append(measure_sandboxed(args, data, Path(tmp) / f"sbx{attempt}",
                                                      args.isa))
            if "b" in args.only:
                results["b"].append(measure_plain(args, ms_env))
            if "c" in args.only:
                results["c"].append(measure_torch(args))
            print(f"run {attempt}: " + ", ".join(f"({k}) {v[-1]:.1f}" for k, v in results.items()),
                  flush=True)
    names = {"a": "sample train.py (as the platform runs it)", "b": "plain MindSpore loop",
             "c": "PyTorch CPU baseline", "s": "sample train.py in the sandbox",
             "p": "the same start, sandbox off"}
    best = {key: max(values) for key, values in results.items()}
    print(f"\nResNet50, CIFAR 32x32, batch {args.batch_size}, {os.cpu_count()} cores, "
          f"ONEDNN_MAX_CPU_ISA={args.isa or '(default)'} for MindSpore; best of {args.repeat}")
    for key, value in best.items():
        print(f"  ({key}) {names[key]:42s} {value:7.1f} images/s")
    if "a" in best and "c" in best:
        print(f"  a/c = {best['a'] / best['c']:.2f}  (goal >= 1.0)")
    base = "p" if "p" in best else "a"
    if base in best and "s" in best:
        print(f"  s/{base} = {best['s'] / best[base]:.3f}  (sandbox overhead "
              f"{1 - best['s'] / best[base]:.1%}, goal <= 3%)")
        cpu_base, cpu_s = min(CPU_SECONDS[base]), min(CPU_SECONDS["s"])
        print(f"  CPU per run (least of {args.repeat}): ({base}) {cpu_base:.1f} s, "
              f"(s) {cpu_s:.1f} s, s/{base} = {cpu_s / cpu_base:.3f}")
        print("  CPU of each run: " + "; ".join(
            f"({k}) {', '.join(f'{x:.1f}' for x in v)}" for k, v in CPU_SECONDS.items() if v))
    if "a" in best and "b" in best:
        overhead = 1 - best["a"] / best["b"]
        print(f"  a/b = {best['a'] / best['b']:.3f}  (sample overhead {overhead:.1%})")


if __name__ == "__main__":
    main()
