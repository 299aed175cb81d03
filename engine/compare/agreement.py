"""What changed between runs, clip by clip: the clips that flip, and how often runs agree.

Pure functions over stored per-split predictions ``{"ids": [n], "y": [n], "probs": [[C] x n]}``.

- `flips` lists the clips whose prediction changed between A and B: *fixed* (A wrong, B right),
  *broken* (A right, B wrong) and *still wrong* (both wrong, different labels). For single runs
  the fixed and broken counts are exactly the discordant cells of McNemar's table
  (`stats.mcnemar_exact`): broken = A right only, fixed = B right only.
- A seed group votes: its label for a clip is the plurality of its seeds' labels (a tie goes to
  the label with the higher mean probability), and each clip says how many seeds agree with it.
- `agreement_matrix` gives, for every pair of runs, the share of clips with the same label and
  Cohen's kappa (agreement corrected for chance, computed by scikit-learn).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.labels import SHORT_NAMES
from .stats import ComparisonError, align_predictions

FLIP_KINDS: tuple[str, ...] = ("fixed", "broken", "still_wrong")


@dataclass(frozen=True)
class GroupVote:
    """A seed group's view of one split, aligned clip by clip.

    labels: (n,) int64 plurality label; probs: (n, C) mean probability over the seeds;
    seeds_agreeing: (n,) int how many seeds predicted `labels`; seeds: group size.
    """

    ids: list[str]
    y: np.ndarray
    labels: np.ndarray
    probs: np.ndarray
    seeds_agreeing: np.ndarray
    seeds: int


def _split(pred: Mapping[str, Any], split: str, name: str) -> dict:
    part = pred.get(split) if isinstance(pred, Mapping) else None
    if not part or not part.get("ids"):
        raise ComparisonError(f"{name} has no predictions for the {split} split (did it finish?)")
    return part


def _common_ids(parts: Sequence[dict]) -> list[str]:
    """The clip ids present in every part, in the first part's order."""
    shared = set(str(i) for i in parts[0]["ids"])
    for part in parts[1:]:
        shared &= set(str(i) for i in part["ids"])
    ordered = [str(i) for i in parts[0]["ids"] if str(i) in shared]
    if not ordered:
        raise ComparisonError("the runs share no clips; were they trained on the same dataset?")
    return ordered


def _restrict(part: dict, ids: Sequence[str]) -> dict:
    pos = {str(clip): k for k, clip in enumerate(part["ids"])}
    rows = [pos[clip] for clip in ids]
    return {"ids": list(ids), "y": [part["y"][k] for k in rows], "probs": [part["probs"][k] for k in rows]}


def group_vote(preds: Sequence[Mapping[str, Any]], split: str, ids: Sequence[str] | None = None) -> GroupVote:
    """Plurality vote of one or more runs' predictions on `split` (clips shared by all of them).

    preds: each a run's stored predictions {split: {"ids", "y", "probs"}}.
    ids: restrict to (and order by) these clips; by default the clips shared by every run.
    """
    if not preds:
        raise ComparisonError("a group needs at least one run")
    parts = [_split(p, split, f"run {k + 1} of the group") for k, p in enumerate(preds)]
    ids = list(ids) if ids is not None else _common_ids(parts)
    aligned = [align_predictions(_restrict(parts[0], ids), _restrict(part, ids)) for part in parts]
    y = aligned[0][1]
    probs = np.stack([p_b for _, _, _, p_b in aligned])  # (seeds, n, C)
    votes = probs.argmax(axis=2)  # (seeds, n)
    num_classes = probs.shape[2]
    counts = np.stack([(votes == c).sum(axis=0) for c in range(num_classes)], axis=1)  # (n, C)
    mean_probs = probs.mean(axis=0)
    # plurality first, mean probability breaks ties
    score = counts + mean_probs / 2.0
    labels = score.argmax(axis=1)
    return GroupVote(
        ids=list(ids), y=y, labels=labels.astype(np.int64), probs=mean_probs,
        seeds_agreeing=counts[np.arange(len(ids)), labels].astype(int), seeds=len(preds),
    )


def _probs_dict(row: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    return {name: round(float(p), 6) for name, p in zip(class_names, row)}


def flips(
    preds_a: Sequence[Mapping[str, Any]],
    preds_b: Sequence[Mapping[str, Any]],
    split: str = "validation",
    class_names: Sequence[str] = SHORT_NAMES,
) -> dict[str, Any]:
    """The clips whose prediction changed between A and B on `split`.

    preds_a, preds_b: one or more runs each (a seed group votes, see `group_vote`).
    Returns {"split", "n" (clips compared), "runs_a", "runs_b" (group sizes), "counts":
    {"fixed", "broken", "still_wrong", "same"}, and lists "fixed", "broken", "still_wrong"}:
    one dict per clip: file (clip id), true_label, label_a, label_b, probabilities_a,
    probabilities_b (class name -> probability; a group's mean), change (total-variation
    distance between the two probability vectors, 0..1), seeds_agreeing_a/_b. Each list is
    sorted by `change`, largest first.
    """
    if split not in ("validation", "test"):
        raise ComparisonError(f"split must be 'validation' or 'test', not {split!r}")
    parts_a = [_split(p, split, f"A run {k + 1}") for k, p in enumerate(preds_a)]
    parts_b = [_split(p, split, f"B run {k + 1}") for k, p in enumerate(preds_b)]
    ids = _common_ids([*parts_a, *parts_b])
    a = group_vote(preds_a, split, ids)
    b = group_vote(preds_b, split, ids)
    if not np.array_equal(a.y, b.y):
        raise ComparisonError("the two sides disagree on the true labels of shared clips")
    if a.probs.shape[1] != len(class_names):
        class_names = [str(c) for c in range(a.probs.shape[1])]
    right_a, right_b = a.labels == a.y, b.labels == b.y
    kinds = {
        "fixed": ~right_a & right_b,
        "broken": right_a & ~right_b,
        "still_wrong": ~right_a & ~right_b & (a.labels != b.labels),
    }
    change = 0.5 * np.abs(a.probs - b.probs).sum(axis=1)
    out: dict[str, Any] = {"split": split, "n": len(ids), "runs_a": a.seeds, "runs_b": b.seeds}
    for kind, mask in kinds.items():
        rows = np.flatnonzero(mask)
        rows = rows[np.argsort(-change[rows], kind="stable")]
        out[kind] = [{
            "file": ids[i],
            "true_label": class_names[int(a.y[i])],
            "label_a": class_names[int(a.labels[i])],
            "label_b": class_names[int(b.labels[i])],
            "probabilities_a": _probs_dict(a.probs[i], class_names),
            "probabilities_b": _probs_dict(b.probs[i], class_names),
            "change": round(float(change[i]), 6),
            "seeds_agreeing_a": int(a.seeds_agreeing[i]),
            "seeds_agreeing_b": int(b.seeds_agreeing[i]),
        } for i in rows]
    out["counts"] = {kind: len(out[kind]) for kind in FLIP_KINDS} | {
        "same": int(len(ids) - sum(len(out[k]) for k in FLIP_KINDS))}
    return out


def agreement_matrix(preds: Mapping[str, Mapping[str, Any]], split: str = "validation") -> dict[str, Any]:
    """Pairwise agreement of several runs' labels on the clips they all share.

    preds: run name -> stored predictions. Returns {"split", "n", "runs": [names],
    "agreement": [[share of clips with the same label]], "kappa": [[Cohen's kappa]]}, both
    (runs, runs) with 1.0 on the diagonal. Kappa is scikit-learn's `cohen_kappa_score`;
    it is NaN (returned as None) when both runs predict one single class for every clip.
    """
    from sklearn.metrics import cohen_kappa_score

    names = list(preds)
    if len(names) < 2:
        raise ComparisonError("agreement needs at least two runs")
    parts = [_split(preds[name], split, f"run {name!r}") for name in names]
    ids = _common_ids(parts)
    labels = [np.asarray(_restrict(part, ids)["probs"], dtype=float).argmax(axis=1) for part in parts]
    k = len(names)
    agree = np.eye(k)
    kappa: list[list[float | None]] = [[1.0 if i == j else None for j in range(k)] for i in range(k)]
    for i in range(k):
        for j in range(i + 1, k):
            agree[i, j] = agree[j, i] = float(np.mean(labels[i] == labels[j]))
            with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
                warnings.simplefilter("ignore")  # sklearn warns when kappa is undefined; None says so
                value = float(cohen_kappa_score(labels[i], labels[j]))
            kappa[i][j] = kappa[j][i] = value if np.isfinite(value) else None
    return {"split": split, "n": len(ids), "runs": names, "agreement": agree.tolist(), "kappa": kappa}

