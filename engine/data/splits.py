"""The split of a dataset that brings none (engine.data.folders): made stratified by class and
group-aware with a fixed seed (`make_split`), and kept in a `path,split` CSV beside the data, or
in the cache when that folder is read-only, so that every run sees the same split."""

from __future__ import annotations

import csv
import hashlib
import io
import os
from pathlib import Path

import numpy as np

from ..core import paths

SPLIT_NAMES = {"training": "training", "train": "training", "validation": "validation", "val": "validation",
               "valid": "validation", "dev": "validation", "test": "test", "testing": "test"}
SPLIT_FILE = "medley_split.csv"  # folders layout: the split made for it, beside the class folders
SPLIT_SEED = 27  # the split's fixed seed
SPLIT_SHARE = {"validation": 0.15, "test": 0.15}  # of each class's groups; the rest is training


def make_split(groups: list[str], labels: list[int], seed: int = SPLIT_SEED) -> list[str]:
    """A split name per file: stratified by class and group-aware, reproducible.

    Each group (a recording, session or player; a file alone by default) goes whole to one
    split. The groups of each class (a group counts for its most frequent label) are shuffled
    with `seed` and dealt out: SPLIT_SHARE of them (rounded) to validation and to test, but at
    least one each when the class has 3 groups or more, and at least one always to training.
    Unlike scikit-learn's StratifiedGroupKFold this keeps every class with three groups in every
    split, which matters for the small classes of a small dataset.
    """
    members: dict[str, list[int]] = {}
    for group, label in zip(groups, labels):
        members.setdefault(group, []).append(label)
    main = {g: max(set(ls), key=lambda k: (ls.count(k), -k)) for g, ls in members.items()}
    rng = np.random.default_rng(seed)
    assign: dict[str, str] = {}
    for label in sorted(set(main.values())):
        names = sorted(g for g, m in main.items() if m == label)
        names = [names[i] for i in rng.permutation(len(names))]
        n = len(names)
        n_val = max(1 if n >= 2 else 0, int(round(n * SPLIT_SHARE["validation"])))
        n_test = max(1 if n >= 3 else 0, int(round(n * SPLIT_SHARE["test"])))
        while n_val + n_test > n - 1 and (n_val or n_test):  # keep one group for training
            if n_test >= n_val and n_test:
                n_test -= 1
            else:
                n_val -= 1
        for i, g in enumerate(names):
            assign[g] = "validation" if i < n_val else "test" if i < n_val + n_test else "training"
    return [assign[g] for g in groups]


def cached_split_file(beside: Path) -> Path:
    """The cache's stand-in for the split file `beside` (one per dataset path)."""
    key = hashlib.sha256(str(beside.resolve()).encode()).hexdigest()[:16]
    return paths.cache_root() / "splits" / f"{key}-{beside.name}"


def read_split_file(path: Path) -> dict[str, str] | None:
    """rel -> split of a stored split file; None when missing or not one of ours."""
    for candidate in (path, cached_split_file(path) if path.parent.name != "splits" else path):
        try:
            rows = list(csv.DictReader(io.StringIO(candidate.read_text(encoding="utf-8"))))
        except (OSError, UnicodeDecodeError, csv.Error):
            continue
        out = {(r.get("path") or "").strip(): SPLIT_NAMES.get((r.get("split") or "").strip().lower(), "") for r in rows}
        if out and all(out.values()):
            return out
    return None


def write_split_file(path: Path, splits: dict[str, str]) -> Path | None:
    """Write `path,split` rows (temp file + os.replace); the cache's copy when `path` is
    read-only; None when neither can be written."""
    text = "path,split\n" + "".join(f"{_csv_cell(rel)},{split}\n" for rel, split in sorted(splits.items()))
    for target in (path, cached_split_file(path)):
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, target)
            return target
        except OSError:
            continue
    return None


def _csv_cell(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text
