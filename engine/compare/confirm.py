"""Confirm a search: is its winner really better than the preset, once the seed luck is out?

A search's best trial is the maximum of many noisy validation scores, one seed each. Here the
top k configurations (distinct, by objective) and the search's base (the recommended preset
by default) are trained again with fresh seeds (never the search's), then compared on the
protocol's validation view (docs/PROTOCOL.md) by the seed-level test, Holm-corrected across
the k comparisons (`ablation.select_by_cross_validation`). The verdict says in words which
configuration, if any, beats the preset beyond the seed spread, with the difference, its 95%
interval and a standardised effect size; test accuracy is read only after that decision and
labelled so.

    plan = plan_confirmation("s1", top=3, seeds=5)
    ids = queue_confirmation(manager, plan); manager.wait(ids)
    verdict = confirm_verdict(plan, [manager.record(i) for i in ids], manager.store)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from ..core.config import RunConfig
from ..core.search_space import SearchError
from ..runs.search import OBJECTIVES, load_study, trial_config, trial_rows
from ..runs.store import group_key
from .ablation import PROTOCOL_ALPHA, mean_std, select_by_cross_validation

PRESET_ROW = "preset"
DEFAULT_TOP = 3
DEFAULT_SEEDS = 5


@dataclass(frozen=True)
class ConfirmPlan:
    """What a confirmation trains: rows (label, configuration; the preset first), the fresh seeds,
    the search's seeds and the search's name."""

    search: str
    rows: tuple[tuple[str, RunConfig], ...]
    seeds: tuple[int, ...]
    search_seeds: tuple[int, ...]
    params: dict[str, dict[str, Any]]  # row label -> the trial's parameters

    def jobs(self) -> list[tuple[RunConfig, str, tuple[str, ...]]]:
        """(config, name, tags) per run, rows outer, seeds inner."""
        tags = ("confirm", f"confirm:{self.search}")
        return [(config.with_values(**{"train.seed": seed}), f"seed {seed} of {label} (confirm {self.search})", tags)
                for label, config in self.rows for seed in self.seeds]


def fresh_seeds(count: int, used: Sequence[int]) -> list[int]:
    """`count` seeds none of `used` holds: the first ones after the largest used."""
    start = max(used, default=-1) + 1
    return list(range(start, start + count))


def plan_confirmation(search: str, top: int = DEFAULT_TOP, seeds: int | Sequence[int] = DEFAULT_SEEDS,
                      path: Any = None) -> ConfirmPlan:
    """The top `top` distinct completed configurations of `search` and its base, each with fresh
    seeds (a count, or a list that must not share a seed with the search). SearchError when the
    search has no completed trial, `top` < 1, fewer than 2 seeds or a seed the search used."""
    spec, study = load_study(search, path)
    if top < 1:
        raise SearchError(f"confirm needs at least the best configuration (--top 1 or more), not {top}")
    used = tuple(int(s) for s in study.user_attrs.get("seeds", [spec.base.train.seed]))
    chosen = fresh_seeds(int(seeds), used) if isinstance(seeds, int) else [int(s) for s in seeds]
    if len(chosen) < 2:
        raise SearchError(f"confirm needs at least 2 fresh seeds per configuration to measure the seed spread, "
                          f"not {len(chosen)}")
    if len(set(chosen)) != len(chosen) or any(s < 0 for s in chosen):
        raise SearchError(f"seeds must be distinct and non-negative, not {chosen}")
    reused = sorted(set(chosen) & set(used))
    if reused:
        raise SearchError(f"seed(s) {reused} trained the search itself; confirm needs fresh ones (e.g. "
                          f"{fresh_seeds(len(chosen), used)})")
    complete = sorted((r for r in trial_rows(study) if r.state == "complete" and r.value is not None),
                      key=lambda r: (-r.value, r.number))
    if not complete:
        raise SearchError(f"search {search!r} has no completed trial to confirm; run or resume it first")
    rows: list[tuple[str, RunConfig]] = [(PRESET_ROW, spec.base)]
    params: dict[str, dict[str, Any]] = {PRESET_ROW: {}}
    seen = {group_key(spec.base)}
    for row in complete:
        config = trial_config(spec, row.params)
        if group_key(config) in seen:
            continue
        seen.add(group_key(config))
        label = f"trial {row.number}"
        rows.append((label, config))
        params[label] = dict(row.params)
        if len(rows) > top:
            break
    if len(rows) == 1:
        raise SearchError(f"every completed trial of {search!r} trained the search's base configuration itself: "
                          f"nothing to confirm against it")
    return ConfirmPlan(search, tuple(rows), tuple(chosen), used, params)


def queue_confirmation(manager: Any, plan: ConfirmPlan) -> list[str]:
    """Queue the plan's runs on a JobManager (seed repeats of a row may train as one group)."""
    return manager.submit_many(plan.jobs())


def _split_for(rows: Sequence[tuple[str, Sequence[Any]]]) -> tuple[str, str | None]:
    """The first of the protocol's views every finished run was evaluated on (program, source,
    in-collection validation), with a note when it is not the program view."""
    finished = [r for _, records in rows for r in records if r.status == "finished"]
    for split, _ in OBJECTIVES:
        if finished and all((r.metrics or {}).get(split) for r in finished):
            note = None if split == OBJECTIVES[0][0] else (
                f"the runs have no {OBJECTIVES[0][0]}; deciding on {split}")
            return split, note
    return OBJECTIVES[-1][0], "no validation view common to every finished run"


def _effect(res: dict[str, Any]) -> float | None:
    """Standardised effect: difference / root mean square of the two seed spreads (Cohen's d over seeds)."""
    sa, sb = res.get("spread_a"), res.get("spread_b")
    if sa is None or sb is None:
        return None
    pooled = math.sqrt((sa ** 2 + sb ** 2) / 2)
    return res["difference"] / pooled if pooled > 0 else None


def confirm_verdict(plan: ConfirmPlan, records: Sequence[Any], store: Any,
                    alpha: float = PROTOCOL_ALPHA) -> dict[str, Any]:
    """The decision, then the test accuracy. `records`: the plan's runs in `plan.jobs()` order;
    `store`: the RunStore holding their predictions.
    JSON-able: search, seeds, search_seeds, split, note, alpha, method, comparisons (one per
    configuration: difference, ci, effect_size, p_value, p_adjusted, significant, words),
    choice, decision (words), and after_decision: {"label", "test": {row: mean, std, runs}}."""
    per_row = len(plan.seeds)
    grouped = [(label, list(records[i * per_row:(i + 1) * per_row])) for i, (label, _) in enumerate(plan.rows)]
    split, note = _split_for(grouped)
    selection = select_by_cross_validation(grouped, lambda r: store.load_predictions(r.id), split=split, alpha=alpha)
    comparisons = []
    for res in selection["tests"]:
        item = {"row": res["row"], "params": plan.params.get(res["row"], {})}
        if "error" in res:
            item.update(error=res["error"], words=f"{res['row']}: not compared ({res['error']})")
        else:
            item.update({k: res.get(k) for k in ("accuracy_a", "accuracy_b", "spread_a", "spread_b", "difference",
                                                 "ci", "p_value", "p_adjusted", "family_size", "significant",
                                                 "n_runs_a", "n_runs_b", "method")})
            item["effect_size"] = _effect(res)
            item["words"] = _words(item, alpha)
        comparisons.append(item)
    choice = selection["choice"]
    decision = _decision(choice, comparisons, split)
    failed = [r.id for _, rs in grouped for r in rs if r.status != "finished"]
    return {"search": plan.search, "seeds": list(plan.seeds), "search_seeds": list(plan.search_seeds),
            "split": split, "note": note, "alpha": alpha, "method": selection["method"],
            "rows": [{"row": label, "params": plan.params.get(label, {}), "runs": [r.id for r in rs],
                      "finished": sum(r.status == "finished" for r in rs)} for label, rs in grouped],
            "comparisons": comparisons, "choice": choice, "decision": decision, "not_finished": failed,
            "decided": any("error" not in c for c in comparisons),
            "after_decision": {"label": "test accuracy, read after the decision (never used to choose)",
                               "test": _test_table(grouped)}}


def _decision(choice: str, comparisons: list[dict[str, Any]], split: str) -> str:
    """The decision in words: the configuration better than the preset beyond the seed spread,
    none, or why there is no decision (nothing other than the base, nothing comparable)."""
    compared = [c for c in comparisons if "error" not in c]
    if not comparisons:
        return "no decision: the search has no configuration other than its base to confirm"
    if not compared:
        return f"no decision: no configuration could be compared with the preset ({comparisons[0]['error']})"
    family = f"Holm-corrected across {len(compared)} comparison{'s' * (len(compared) != 1)}"
    if choice == PRESET_ROW:
        return f"no configuration is better than the preset beyond the seed spread on {split} ({family}): keep the preset"
    gain = next(c for c in compared if c["row"] == choice)["difference"]
    return f"{choice} is better than the preset beyond the seed spread (+{100 * gain:.1f} points on {split}, {family})"


def _words(item: dict[str, Any], alpha: float) -> str:
    low, high = item["ci"]
    effect = "" if item["effect_size"] is None else f", effect size {item['effect_size']:+.2f} seed SDs"
    head = (f"{item['row']}: {100 * item['difference']:+.1f} points against the preset "
            f"(95% CI {100 * low:+.1f} to {100 * high:+.1f}{effect}), p {item['p_value']:.3g}, "
            f"Holm p {item['p_adjusted']:.3g}")
    if item["significant"]:
        return head + (": better beyond the seed spread" if item["difference"] > 0 else ": worse beyond the seed spread")
    return head + f": not distinguishable from the preset at alpha {alpha:g}"


def _test_table(grouped: Sequence[tuple[str, Sequence[Any]]]) -> dict[str, dict[str, Any]]:
    out = {}
    for label, records in grouped:
        values = [((r.metrics or {}).get("test") or {}).get("accuracy") for r in records if r.status == "finished"]
        mean, std = mean_std(values)
        out[label] = {"mean": mean, "std": std, "runs": sum(v is not None for v in values)}
    return out


def format_verdict(verdict: dict[str, Any]) -> str:
    """The verdict as text: the comparisons, the decision, then test accuracy, labelled."""
    lines = [f"confirm {verdict['search']}: fresh seeds {verdict['seeds']} (the search used {verdict['search_seeds']}); "
             f"{verdict['method']}; {verdict['split']}, alpha {verdict['alpha']}"]
    if verdict.get("note"):
        lines.append(f"note: {verdict['note']}")
    for row in verdict["rows"]:
        params = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                           for k, v in row["params"].items()) or "the search's base"
        lines.append(f"  {row['row']:<10} {row['finished']}/{len(row['runs'])} runs finished: {params}")
    lines += [f"  {c['words']}" for c in verdict["comparisons"]]
    lines.append(f"decision: {verdict['decision']}")
    lines.append(f"{verdict['after_decision']['label']}:")
    for label, cell in verdict["after_decision"]["test"].items():
        value = "-" if cell["mean"] is None else f"{100 * cell['mean']:.1f}%" + (
            "" if cell["std"] is None else f" +- {100 * cell['std']:.1f}")
        lines.append(f"  {label:<10} {value}")
    return "\n".join(lines)


def confirm_runs(search: str, store: Any) -> list[Any]:
    """Runs a confirmation of `search` queued (tag confirm:NAME), oldest first."""
    return list(reversed(store.list_runs(tag=f"confirm:{search}")))

