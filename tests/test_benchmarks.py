"""`python -m benchmarks`: the runner's machinery, cheaply (one fast benchmark at its quick
size, fake benchmarks for failure and skips), the JSON record, and the generated table."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from benchmarks import report, runner
from benchmarks.runner import Benchmark

ROOT = Path(__file__).resolve().parent.parent
MACHINE_FIELDS = {"cpu", "cores", "torch_threads", "torch", "gpu"}


def test_quick_only_one_benchmark_writes_its_record(tmp_path):
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--only", "calibration",
                           "--results", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "calibration: ok" in done.stdout
    record = json.loads((tmp_path / "calibration.json").read_text())
    assert record["name"] == "calibration" and record["mode"] == "quick" and record["status"] == "ok"
    assert record["figure_line"].startswith("worst:") and isinstance(record["ratio"], float)
    assert "worst" in record["figures"]
    assert MACHINE_FIELDS <= set(record["machine"]) and record["machine"]["cores"] >= 1
    assert record["machine"]["torch"] == torch.__version__
    assert record["date"].endswith("+00:00")
    assert record["commit"] is None if not (ROOT / ".git").exists() else len(record["commit"]) >= 40
    assert record["command"][:2] == ["python", "benchmarks/calibration.py"] and "--null" in record["command"]
    assert [p.name for p in tmp_path.iterdir()] == ["calibration.json"]


def _fake(tmp_path: Path, name: str, body: str, needs: tuple[str, ...] = ()) -> Benchmark:
    script = tmp_path / f"{name}.py"
    script.write_text(body)
    return Benchmark(name, str(script), "a fake", r"^speedup:\s+([\d.]+)x", needs=needs)


@pytest.mark.parametrize("body, status", [
    ("print('speedup: 2.50x')\n", "ok"),
    ("print('no figure here')\n", "failed"),
    ("print('speedup: 2.50x')\nraise SystemExit('dataset too small for this benchmark')\n", "failed"),
])
def test_a_benchmark_that_crashes_or_prints_no_figure_fails_the_command(tmp_path, monkeypatch, capsys, body, status):
    fake = _fake(tmp_path, "fake", body)
    monkeypatch.setattr(runner, "BY_NAME", {"fake": fake})
    code = runner.main(["--quick", "--only", "fake", "--results", str(tmp_path / "out")])
    record = json.loads((tmp_path / "out" / "fake.json").read_text())
    assert record["status"] == status
    assert code == (0 if status == "ok" else 1)
    if status == "ok":
        assert record["ratio"] == 2.5 and record["figures"] == {"speedup": "2.50x"}
    assert "dataset too small" in capsys.readouterr().out or "too small" not in body


def test_a_benchmark_whose_needs_are_missing_is_skipped_and_does_not_fail(tmp_path, monkeypatch, capsys):
    fake = _fake(tmp_path, "needy", "raise SystemExit(1)\n", needs=("no_such_module_for_issue31",))
    monkeypatch.setattr(runner, "BY_NAME", {"needy": fake})
    assert runner.main(["--quick", "--only", "needy", "--results", str(tmp_path)]) == 0
    assert "needy: skipped: no_such_module_for_issue31 is not installed" in capsys.readouterr().out
    assert json.loads((tmp_path / "needy.json").read_text())["status"] == "skipped"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_the_gpu_benchmark_is_skipped_without_cuda():
    assert runner.missing_need(runner.BY_NAME["gpu"].needs) == "no CUDA device"


def test_every_script_of_the_folder_is_registered_with_a_quick_size():
    scripts = {p.name for p in (ROOT / "benchmarks").glob("*.py")} - {"__init__.py", "__main__.py", "runner.py", "report.py"}
    assert scripts == {b.script for b in runner.BENCHMARKS}
    assert all(b.quick for b in runner.BENCHMARKS)


def test_the_features_benchmark_refuses_a_dataset_too_small_for_it(make_tiny_dataset, medley_cache):
    data = make_tiny_dataset(per_class=1, classes=(0,))
    done = subprocess.run([sys.executable, "benchmarks/features.py", "--data", str(data), "--clips", "200"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "too small for this benchmark: it has 3 clips, --clips asks for 200" in done.stderr


def _record(name: str, **changes) -> dict:
    return {"name": name, "mode": "normal", "status": "ok", "figure_line": "speedup: 5.74x", "ratio": 5.74,
            "command": ["python", f"benchmarks/{name}.py"], "date": "2026-12-07T15:00:00+00:00", "commit": "a" * 40,
            "machine": {"cpu": "Some CPU", "cores": 2, "torch_threads": 2, "torch": "2.13.0+cpu", "gpu": None}} | changes


def test_the_report_table_names_each_figure_with_its_machine_and_date(tmp_path):
    records = (_record("training"), _record("seeds", mode="quick"), _record("pages", status="failed"),
               _record("gpu", status="skipped", reason="no CUDA device"))
    for record in records:
        (tmp_path / f"{record['name']}.json").write_text(json.dumps(record))
    doc = tmp_path / "PERFORMANCE.md"
    doc.write_text(f"# Performance\n\nbefore\n{report.BEGIN}\nold table\n{report.END}\nafter\n")
    report.write_report(tmp_path, doc)
    text = doc.read_text()
    assert "old table" not in text and text.startswith("# Performance\n\nbefore\n") and text.endswith("after\n")
    row = next(line for line in text.splitlines() if line.startswith("| `training`"))
    assert "`speedup: 5.74x`" in row and "Some CPU, 2 cores, 2 torch threads" in row and "2026-12-07 15:00" in row
    assert "skipped: no CUDA device" in next(line for line in text.splitlines() if line.startswith("| `gpu`"))
    for name in ("seeds", "pages", "features"):  # a quick record, a failed one, none: no figure
        assert "not recorded yet" in next(line for line in text.splitlines() if line.startswith(f"| `{name}`"))


def test_the_report_needs_its_markers_and_the_doc_has_them(tmp_path):
    with pytest.raises(ValueError, match="markers"):
        report.replace_section("no markers here", "table")
    text = report.DOC.read_text()
    assert 0 <= text.find(report.BEGIN) < text.find(report.END)


def test_a_benchmark_past_its_timeout_is_killed_with_what_it_started_and_fails(tmp_path, monkeypatch):
    body = ("import subprocess, sys, time\n"
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            "print('started', flush=True)\ntime.sleep(60)\n")
    monkeypatch.setattr(runner, "BY_NAME", {"slow": _fake(tmp_path, "slow", body)})
    start = time.perf_counter()
    assert runner.main(["--quick", "--only", "slow", "--timeout", "2", "--results", str(tmp_path)]) == 1
    assert time.perf_counter() - start < 30, "the runner waited for the benchmark's child"
    record = json.loads((tmp_path / "slow.json").read_text())
    assert record["status"] == "failed" and record["output"][-1] == "(killed after 2 s)"


def test_figures_are_the_labelled_numbers_of_the_output():
    lines = ["1 at a time:           0.60 epochs/s", "2026-12-07 14:52:40.129 WARNING streamlit: 3 pages",
             "speedup: 1.31x", "  worst: 0.049", "device cpu, torch threads 1"]
    assert runner.figures_of(lines) == {"1 at a time": "0.60 epochs/s", "speedup": "1.31x", "worst": "0.049"}
