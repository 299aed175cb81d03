"""Run the benchmarks of this folder, each in its own process, and keep one JSON record per run.

    python -m benchmarks                  # every benchmark at its normal size
    python -m benchmarks --quick          # every benchmark at its smallest size (CI: does each run?)
    python -m benchmarks --only training  # one (repeatable: --only a --only b)
    python -m benchmarks --report         # docs/PERFORMANCE.md's summary table from the records

A benchmark runs as `sys.executable benchmarks/<script> <arguments>`; its output is shown as it
comes and searched for its figure line (`speedup: 5.7x`, ...), whose number is the ratio
against the reference the benchmark measures in the same run. Each run writes
`<results>/<name>.json`: name, mode, status (ok / failed / skipped), the figure line and its
ratio, every `label: number` line as figures, the command, wall seconds, the machine (CPU
model, cores, torch threads, torch version, GPU), the date (UTC) and the git commit.

Normal-size records go to benchmarks/results/ and are committed: they back the figures of
docs/PERFORMANCE.md. Quick records go to benchmarks/results/quick/, which git ignores. A
benchmark whose needs are missing (a CUDA GPU, ray, Chromium, an optional package) is
recorded as skipped with the reason and does not fail the command; a benchmark that exits
non-zero, or prints no figure line, does (exit status 1).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
QUICK_RESULTS = RESULTS / "quick"
# `label: number...`; the label holds a letter (a log line's "2026-12-07 14:52" is no label)
FIGURE_LINE = re.compile(r"^\s*(?=[^:]*[A-Za-z])([A-Za-z0-9][^:]{0,60}):\s+(-?\d[\d.,]*)")


@dataclass(frozen=True)
class Benchmark:
    """One script of benchmarks/: its arguments at the normal and the quick size, the regex of
    its figure line (group 1: the ratio against its in-run reference) and what it needs
    ("cuda", "chromium", or an importable module name)."""

    name: str
    script: str
    what: str
    figure: str
    normal: tuple[str, ...] = ()
    quick: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("augmentation", "augmentation.py", "epoch with 4 augmented views + SpecAugment / plain epoch",
              r"^epoch ratio \(augmented / plain\):\s+([\d.]+)x", normal=("--repeats", "3", "--epochs", "2"),
              quick=("--repeats", "1", "--epochs", "1", "--hidden", "8", "--clips", "2", "--train-clips", "40"),
              needs=("pedalboard",)),
    Benchmark("calibration", "calibration.py", "worst false-positive rate of the seed-level test at alpha 0.05",
              r"^\s*worst:\s+([\d.]+)", quick=("--null", "100", "--power", "50")),
    Benchmark("concurrency", "concurrency.py", "4 concurrent runs / 1 at a time (epochs per second)",
              r"^speedup:\s+([\d.]+)x", quick=("--runs", "2", "--concurrent", "2", "--epochs", "1", "--clips", "200")),
    Benchmark("features", "features.py", "feature extraction, ours / the study's librosa loop (clips per second)",
              r"^speedup:\s+([\d.]+)x",
              quick=("--data", "demo:tiny", "--clips", "16", "--repeats", "1", "--memory-clips", "0")),
    Benchmark("gpu", "gpu.py", "the GPU path: CUDA tests and a table of GPU figures",
              r"^\d+ seeds grouped vs sequential\s.*:\s+([\d.]+)x",
              quick=("--quick", "--skip-tests"), needs=("cuda",)),
    Benchmark("live_view", "live_view.py", "a 50-epoch run watched in a browser / unwatched (wall time)",
              r"^overhead:\s+([\d.]+)x", quick=("--data", "demo:tiny", "--repeats", "1", "--epochs", "1"),
              needs=("playwright", "chromium")),
    Benchmark("onnx_export", "onnx_export.py", "inference per clip, the torch Predictor / onnxruntime on the "
              "exported ONNX file (1 thread each; the output also gives each export's time)",
              r"^torch / onnxruntime per clip \(geometric mean\):\s+([\d.]+)x",
              quick=("--repeats", "1", "--batches", "1,8"), needs=("onnx", "onnxruntime")),
    Benchmark("pages", "pages.py", "page budget (1 s) / slowest page with 200 runs in the store",
              r"^headroom:\s+([\d.]+)x", quick=("--runs", "2", "--repeats", "1")),
    Benchmark("ray_backend", "ray_backend.py", "4 runs through a local Ray / the local backend, 1 at a time",
              r"^ray, .*ratio vs local 1 at a time:\s+([\d.]+)x",
              quick=("--runs", "1", "--epochs", "1", "--clips", "200", "--repeats", "1", "--ray-cpus", "1"),
              needs=("ray",)),
    Benchmark("resample", "resample.py", "the 2019 resampler: resampy / ours (ms per clip)",
              r"^resampy / ours:\s+([\d.]+)x", quick=("--clips", "2"), needs=("resampy",)),
    Benchmark("search", "search.py", "pruned TPE search / full grid: epochs to reach the grid's best validation "
              "accuracy (within 1 point), median of 3 search seeds", r"^epochs_ratio:\s+([\d.]+)",
              quick=("--quick",), needs=("optuna",)),
    Benchmark("seeds", "seeds.py", "5 seeds grouped / one after another (s per epoch)", r"^speedup:\s+([\d.]+)x",
              normal=("--sequence-steps", "0"),
              quick=("--seeds", "2", "--clips", "200", "--val-clips", "100", "--epochs", "2", "--repeats", "1",
                     "--sequence-steps", "0")),
    Benchmark("seeds_profile", "seeds_profile.py", "a lone study run per epoch: slice backward / `model._GateRows`",
              r"^gate rows \(per epoch\):\s+([\d.]+)x", normal=("--gate-rows", "2", "--threads", "2"),
              quick=("--gate-rows", "1", "--gate-clips", "200", "--gate-epochs", "2")),
    Benchmark("training", "training.py", "training per epoch, the study's loop / the engine (float32)",
              r"^speedup:\s+([\d.]+)x",
              quick=("--clips", "200", "--val-clips", "100", "--epochs", "2", "--repeats", "1")),
    Benchmark("trust", "trust.py", "OOD AUROC of the run's check (in: validation; out: the other collection "
              "and non-instrument audio); the line also gives test ECE before / after calibration",
              r"^ood_auroc:\s+([\d.]+)", quick=("--quick",)),
)
BY_NAME = {bench.name: bench for bench in BENCHMARKS}


def missing_need(needs: tuple[str, ...]) -> str | None:
    """Why a benchmark cannot run here ("no CUDA device", "ray is not installed", ...), or None."""
    for need in needs:
        if need == "cuda" and not _cuda_available():
            return "no CUDA device"
        if need == "chromium" and not _chromium_path().exists():
            return f"no Chromium at {_chromium_path()} (apt-get install -y chromium)"
        if need not in ("cuda", "chromium") and importlib.util.find_spec(need) is None:
            return f"{need} is not installed"
    return None


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _chromium_path() -> Path:
    """Where live_view.py launches Chromium from (tests/helpers_browser.CHROMIUM)."""
    return Path("/usr/bin/chromium")


def machine() -> dict:
    """The machine a record was measured on: CPU model, cores, torch threads and version, GPU."""
    import torch

    return {
        "cpu": _cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "python": platform.python_version(), "load_average": round(os.getloadavg()[0], 1),  # 1 min, at the start
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str | None:
    """HEAD's hash, "+dirty" when tracked files differ from it; None outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


def figures_of(lines: list[str]) -> dict[str, str]:
    """Every `label: number...` line of a benchmark's output as {label: the rest of the line}."""
    found = {}
    for line in lines:
        match = FIGURE_LINE.match(line)
        if match:
            found[match.group(1).strip()] = line.split(":", 1)[1].strip()
    return found


def figure_line(bench: Benchmark, lines: list[str]) -> tuple[str, float] | None:
    """(the last line matching the benchmark's figure regex, its ratio), None when it printed none."""
    pattern = re.compile(bench.figure)
    for line in reversed(lines):
        match = pattern.search(line)
        if match:
            return line.strip(), float(match.group(1))
    return None


def run_script(command: list[str], timeout_s: float | None) -> tuple[int, list[str], float]:
    """Run `command`, echoing its output (stdout and stderr) as it comes; (exit status, lines,
    wall s). Past `timeout_s` seconds it is killed (a silent hang included)."""
    start = time.perf_counter()
    lines: list[str] = []
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          bufsize=1, env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True) as proc:
        timer = threading.Timer(timeout_s, _kill_group, (proc,)) if timeout_s is not None else None
        if timer is not None:
            timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                print(f"  {line}", end="", flush=True)
                lines.append(line.rstrip("\n"))
            status = proc.wait()
        finally:
            if timer is not None:
                timer.cancel()
    if timer is not None and status < 0:
        lines.append(f"(killed after {timeout_s:.0f} s)")
    return status, lines, time.perf_counter() - start


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the benchmark and what it started (its own process group: servers, child processes)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def run_benchmark(bench: Benchmark, quick: bool, timeout_s: float | None = None) -> dict:
    """Run one benchmark (or skip it, saying why) and return its record."""
    record = {"name": bench.name, "what": bench.what, "mode": "quick" if quick else "normal",
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "commit": git_commit(), "machine": machine()}
    reason = missing_need(bench.needs)
    if reason:
        print(f"{bench.name}: skipped: {reason}", flush=True)
        return record | {"status": "skipped", "reason": reason}
    command = [sys.executable, str(HERE / bench.script), *(bench.quick if quick else bench.normal)]
    print(f"{bench.name}: {' '.join(command[1:])}", flush=True)
    status, lines, seconds = run_script(command, timeout_s)
    found = figure_line(bench, lines)
    shown = ["python", f"benchmarks/{bench.script}", *command[2:]]  # as a reader would type it
    record |= {"command": shown, "seconds": round(seconds, 1), "exit_status": status,
               "figure_line": found[0] if found else None, "ratio": found[1] if found else None,
               "figures": figures_of(lines), "output": lines[-60:]}
    if status != 0 or found is None:
        why = f"exit status {status}" if status != 0 else f"no figure line matching {bench.figure!r}"
        print(f"{bench.name}: FAILED ({why}) after {seconds:.1f} s", flush=True)
        return record | {"status": "failed", "reason": why}
    print(f"{bench.name}: ok in {seconds:.1f} s: {found[0]}", flush=True)
    return record | {"status": "ok"}


def write_record(record: dict, folder: Path) -> Path:
    """Write `record` as <folder>/<name>.json (replacing the last one; git keeps the history)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{record['name']}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="each benchmark at its smallest size (checks that it runs)")
    parser.add_argument("--only", action="append", choices=sorted(BY_NAME), metavar="NAME",
                        help=f"run only this benchmark (repeatable): {', '.join(sorted(BY_NAME))}")
    parser.add_argument("--results", type=Path, default=None,
                        help=f"folder of the JSON records (default {RESULTS.relative_to(ROOT)}/, "
                             f"quick: {QUICK_RESULTS.relative_to(ROOT)}/)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per benchmark (default: quick 300, else none)")
    parser.add_argument("--report", action="store_true",
                        help="write docs/PERFORMANCE.md's summary table from the records instead of running")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benchmarks; 0 when none failed (skipped ones do not fail), else 1."""
    args = parse_args(argv)
    if args.report:
        from benchmarks.report import write_report

        print(f"wrote the summary table of {write_report(args.results or RESULTS)}")
        return 0
    folder = args.results or (QUICK_RESULTS if args.quick else RESULTS)
    timeout_s = args.timeout if args.timeout is not None else (300.0 if args.quick else None)
    chosen = [BY_NAME[name] for name in args.only] if args.only else list(BENCHMARKS)
    start = time.perf_counter()
    records = []
    for bench in chosen:  # each record written as soon as its benchmark ends: an interrupted run keeps the others
        records.append(run_benchmark(bench, args.quick, timeout_s))
        write_record(records[-1], folder)
    summary = ", ".join(f"{r['name']} {r['status']}" for r in records)
    print(f"{len(records)} benchmark(s) in {time.perf_counter() - start:.0f} s ({summary}); records in {folder}")
    return 1 if any(r["status"] == "failed" for r in records) else 0
