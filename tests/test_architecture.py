"""The house by stage (docs/ARCHITECTURE.md): engine/ is cut into the stages of the data flow,
`engine.STAGES` in order; a module imports only its own and earlier stages, nothing imports in
a cycle (module-level or inside functions, `if TYPE_CHECKING:` included), no module grows past
about 600 lines unless it is one concept, and what was stored before the move still loads.

The graph comes from the source (ast), not from importing it, so a lazy import inside a
function counts as much as one at the top.
"""

from __future__ import annotations

import ast
import json
import pickletools
import shutil
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).resolve().parent / "data" / "store_before_issue28.zip"
TOP_LEVEL = ("engine", "engine.__main__", "engine.cli")  # above every stage: the package, `python -m engine`
MAX_LINES = 600
ONE_CONCEPT = {  # over MAX_LINES, and why they stay one module
    "engine/cli.py": "the command line: one argparse tree and one cmd_* per subcommand",
    "engine/runs/store.py": "the run store: RunStore over SQLite + run folders, and rebuilding it from those folders",
    "engine/compare/stats.py": "the statistics of comparing runs (McNemar, bootstrap, seed-level test, Holm), numbers only",
    "engine/data/demo.py": "the demo dataset generator (songs, rendering workers, the folder's layout)",
    "engine/features/spectral.py": "librosa's spectral features as batched torch ops, one function per feature",
}


# ---- the graph -------------------------------------------------------------------------------


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Dotted name -> file, for engine/, ui/, pages/ and dashboard.py."""
    files = [*root.glob("engine/**/*.py"), *root.glob("ui/**/*.py"), *root.glob("pages/*.py"), root / "dashboard.py"]
    out = {}
    for path in files:
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(name: str, modules: set[str]) -> str | None:
    """The module `name` names, or the nearest enclosing one of ours; None when not ours."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, source: str, modules: set[str], is_package: bool = False) -> set[str]:
    """Our modules that `source` imports anywhere (top level, functions, TYPE_CHECKING blocks)."""
    package = module if is_package else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [_resolve(alias.name, modules) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            targets = [_resolve(f"{origin}.{alias.name}", modules) or _resolve(origin, modules) for alias in node.names]
        else:
            continue
        out.update(t for t in targets if t and t != module)
    return out


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    files = module_files(root)
    names = set(files)
    return {m: imports_of(m, p.read_text(encoding="utf-8"), names, p.name == "__init__.py") for m, p in files.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def engine_stages(root: Path = ROOT) -> tuple[str, ...]:
    """engine.STAGES, read from engine/__init__.py (declared there once)."""
    for node in ast.parse((root / "engine" / "__init__.py").read_text()).body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == "STAGES":
            return tuple(ast.literal_eval(node.value))
    raise AssertionError("engine/__init__.py declares no STAGES")


def rank(module: str, stages: tuple[str, ...]) -> int | None:
    """Position in the flow: a stage's index; the top level (cli) after them; the dashboard
    (ui, pages, dashboard.py) last. None: a module of engine/ that belongs to no stage."""
    if module.split(".")[0] != "engine":
        return len(stages) + 1
    if module in TOP_LEVEL:
        return len(stages)
    stage = module.split(".")[1]
    return stages.index(stage) if stage in stages and module.count(".") >= 1 else None


def backward_arrows(graph: dict[str, set[str]], stages: tuple[str, ...]) -> list[str]:
    """'a -> b' for every import from an earlier stage to a later one."""
    bad = []
    for source, targets in sorted(graph.items()):
        for target in sorted(targets):
            r_source, r_target = rank(source, stages), rank(target, stages)
            if r_source is not None and r_target is not None and r_target > r_source:
                bad.append(f"{source} -> {target}")
    return bad


# ---- the checks on this repository -----------------------------------------------------------


def test_no_import_cycle() -> None:
    assert find_cycles(import_graph()) == []


def test_imports_point_from_later_stages_to_earlier_ones() -> None:
    assert backward_arrows(import_graph(), engine_stages()) == []


def test_every_engine_module_belongs_to_a_stage() -> None:
    stages = engine_stages()
    homeless = [m for m in module_files() if m.startswith("engine") and rank(m, stages) is None]
    assert homeless == [], f"place these in one of engine/{{{','.join(stages)}}}/ (docs/ARCHITECTURE.md)"
    assert sorted(p.name for p in (ROOT / "engine").iterdir() if p.is_dir() and p.name != "__pycache__") == sorted(stages)


def test_each_stage_package_says_what_it_holds_and_imports_nothing() -> None:
    for stage in engine_stages():
        tree = ast.parse((ROOT / "engine" / stage / "__init__.py").read_text())
        doc = ast.get_docstring(tree)
        assert doc and "import" in doc.lower(), f"engine/{stage}/__init__.py: a docstring saying what it holds and may import"
        assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))], stage


def test_the_engine_never_imports_streamlit_or_the_dashboard() -> None:
    for path in (ROOT / "engine").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            assert not [n for n in names if n.split(".")[0] in ("streamlit", "ui", "pages")], path


def test_modules_stay_small_unless_one_concept() -> None:
    files = [*ROOT.glob("engine/**/*.py"), *ROOT.glob("ui/**/*.py")]
    long = {p.relative_to(ROOT).as_posix(): len(p.read_text().splitlines()) for p in files}
    over = sorted(name for name, n in long.items() if n > MAX_LINES and name not in ONE_CONCEPT)
    assert over == [], f"over {MAX_LINES} lines: split by concept, or say why it is one in ONE_CONCEPT"


# ---- the checks can fail ---------------------------------------------------------------------


def test_the_checks_catch_a_cycle_and_a_backward_arrow() -> None:
    modules = {"engine.core.labels", "engine.data.dataset", "engine.data.demo", "engine.runs.jobs", "ui.live"}
    graph = {
        "engine.core.labels": imports_of("engine.core.labels", "def f():\n    from ..runs.jobs import JobManager\n",
                                         modules),
        "engine.data.dataset": imports_of("engine.data.dataset", "def load():\n    from .demo import make_demo\n",
                                          modules),
        "engine.data.demo": imports_of("engine.data.demo", "from .dataset import PROGRAM_VIEW\n", modules),
        "engine.runs.jobs": imports_of("engine.runs.jobs", "from engine.core import labels\nimport ui.live\n", modules),
    }
    assert graph["engine.core.labels"] == {"engine.runs.jobs"}  # found inside a function
    assert find_cycles(graph) == [["engine.core.labels", "engine.runs.jobs"], ["engine.data.dataset", "engine.data.demo"]]
    stages = ("core", "data", "features", "learn", "predict", "runs", "compare")
    assert backward_arrows(graph, stages) == ["engine.core.labels -> engine.runs.jobs", "engine.runs.jobs -> ui.live"]
    assert rank("engine.calibration", stages) is None  # a new module at engine/'s top belongs to no stage


# ---- what was stored before the move still loads ---------------------------------------------


def test_project_and_cache_folders_did_not_move(monkeypatch) -> None:
    from engine.core import paths
    from engine.runs.ray_backend import engine_module_dir

    monkeypatch.delenv("MEDLEY_CACHE", raising=False)
    assert paths.PROJECT_ROOT == ROOT and paths.cache_root() == ROOT / "cache"
    assert Path(engine_module_dir()) == ROOT / "engine"  # what Ray ships to remote nodes


def _pickled_names(data: bytes) -> set[str]:
    """Every string a pickle stream holds (module paths of GLOBAL/STACK_GLOBAL among them)."""
    names = set()
    for op, arg, _ in pickletools.genops(data):
        if isinstance(arg, str):
            names.add(arg)
    return names


def test_a_store_and_bundle_written_before_the_move_still_load(tmp_path: Path) -> None:
    """tests/data/store_before_issue28.zip was written by the flat engine/ (commit 29e4226,
    before the stage subpackages): a finished run of helpers_jobs.tiny_config trained on
    synthetic_data, an interrupted one with its checkpoint, the finished run's model bundle,
    and expected.json (ids, config digests, the finished model's outputs for 5 test clips).
    The weights pickle plain tensors only (no engine module path), the configs' digests
    (cache keys, seed groups) are unchanged and the model gives the same outputs."""
    from engine.core.config import RunConfig
    from engine.predict.predictor import Predictor
    from engine.runs.export import load_bundle
    from engine.runs.store import RunStore, group_key, rebuild_store

    with zipfile.ZipFile(FIXTURE) as zf:
        zf.extractall(tmp_path)
    expected = json.loads((tmp_path / "expected.json").read_text())
    store = RunStore(tmp_path / "runs.sqlite", tmp_path / "runs")
    try:
        finished, interrupted = store.get(expected["finished"]), store.get(expected["interrupted"])
        assert finished.status == "finished" and interrupted.status == "interrupted"
        assert finished.config.digest() == expected["digest"] == RunConfig.from_json(finished.config.to_json()).digest()
        assert interrupted.config.digest() == expected["digest_interrupted"]
        assert finished.group_key == group_key(finished.config)
        predictor = Predictor.from_store(store, finished.id)
        x = np.asarray(expected["x"], dtype=np.float32)
        np.testing.assert_allclose(predictor.predict_features(x), expected["probs"], atol=1e-6)
        checkpoint = store.load_checkpoint(interrupted.id)
        assert checkpoint is not None and checkpoint["epoch"] == 1 and "model" in checkpoint
    finally:
        store.close()
    bundle = load_bundle(tmp_path / "bundle.zip")
    np.testing.assert_allclose(bundle.predict_features(x), expected["probs"], atol=1e-6)
    for path in [tmp_path / "runs" / expected["finished"] / "model.pt", tmp_path / "runs" / expected["interrupted"] / "checkpoint.pt"]:
        with zipfile.ZipFile(path) as zf:
            pickled = [n for n in zf.namelist() if n.endswith(".pkl")]
            assert pickled and not [s for n in pickled for s in _pickled_names(zf.read(n)) if s.startswith("engine")]
    shutil.copytree(tmp_path / "runs", tmp_path / "again" / "runs")  # the index rebuilt from the run folders
    report = rebuild_store(tmp_path / "again" / "runs.sqlite", tmp_path / "again" / "runs")
    assert report.recovered == [expected["finished"]] and report.skipped == []  # the interrupted one saved no result
