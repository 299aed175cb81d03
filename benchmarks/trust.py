"""Trust on audio the model has not heard (issue #24): calibration and out-of-distribution checks.

Trains the recommended preset on the demo data (or reuses a stored run: `--run ID`), then
prints, from the selected epoch's model:

- calibration (engine.learn.calibration: temperature scaling fitted on validation; top-label ECE,
  15 equal-width bins; NLL in nats per clip) before and after, per split; for the synthetic
  non-instrument audio, which has no true instrument, the mean top probability instead;
- out-of-distribution AUROC (sklearn roc_auc_score; in = validation clips) of every score in
  engine.learn.ood against: the demo's test split (another soundfont: the shifted collection), the
  synthetic non-instrument audio (engine.data.probes), both together, and, to confirm the choice on
  shifts it was not chosen on, the validation clips through the held-out recording chain
  (features.load_heldout_validation) and the held-out GM programs (demo only);
- with the run's own method and threshold (95% of validation accepted): the share flagged and
  the accuracy among accepted vs flagged clips, per split.

    python benchmarks/trust.py                 # demo:default, recommended preset, ~3-6 min on 2 cores
    python benchmarks/trust.py --quick         # demo:tiny, 3 epochs, 3 clips per kind: well under a minute
    python benchmarks/trust.py --run RUN_ID    # a stored run's model instead of training one

Last line: `ood_auroc: A | ece_test_before: B | ece_test_after: C` (A: the run's method, in =
validation, out = test split and non-instrument audio together).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.learn import calibration
from engine.learn import ood  # noqa: E402
from engine.data.dataset import resolve_dataset  # noqa: E402
from engine.features.extract import FeatureSet, clip_features, load_features, load_heldout_validation, load_program_validation, load_source_validation  # noqa: E402
from engine.predict.predictor import Predictor  # noqa: E402
from engine.learn.presets import RECOMMENDED  # noqa: E402
from engine.data.probes import non_instrument_clips  # noqa: E402
from engine.learn.metrics import CROSS_VALIDATION_KEYS  # noqa: E402
from engine.learn.train import train_run  # noqa: E402
from engine.learn.trust import fitted_on_words, score  # noqa: E402

NON_INSTRUMENT = "non-instrument"
KIND_PREFIX = "kind: "


def load_data(config) -> dict[str, FeatureSet]:
    """training, validation, test, the held-out chain view and (demo) the held-out programs."""
    ds = resolve_dataset(config.data or None)
    data = load_features(ds, config.features)
    data["validation_shift"] = load_heldout_validation(ds, config.features)
    data["validation_source"] = load_source_validation(ds, config.features)
    program = load_program_validation(ds, config.features)
    if program is not None:
        data["validation_program"] = program
    return data


def probe_features(config, per_kind: int, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Features (n, frames, features) of the synthetic non-instrument clips, and each one's kind."""
    fc = config.features
    clips = non_instrument_clips(per_kind, fc.sample_rate, fc.clip_samples, seed)
    kinds = [kind for kind, ys in clips.items() for _ in ys]
    return np.stack([clip_features(y, fc) for ys in clips.values() for y in ys]).astype(np.float32), kinds


def trained_predictor(config, data: dict, run_id: str | None) -> Predictor:
    """The Predictor (with its run's calibration and OOD records) of a stored run, or of a run
    trained here with train_run."""
    if run_id:
        from engine.runs.store import RunStore

        return Predictor.from_store(RunStore(), run_id)
    started = time.perf_counter()
    kept = ("training", "validation", "test", *CROSS_VALIDATION_KEYS)  # as the dashboard's runs get them
    result = train_run(config, {k: v for k, v in data.items() if k in kept}, device="cpu")
    print(f"trained {config.train.epochs} epochs in {time.perf_counter() - started:.0f} s "
          f"(validation accuracy {result.metrics['validation']['accuracy']:.3f}, "
          f"test {result.metrics['test']['accuracy']:.3f})")
    return Predictor(config, result.state_dict, result.standardizer, metrics=result.metrics,
                     ood_reference=result.ood_reference)


def logits_and_embeddings(predictor: Predictor, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The model's logits (n, classes) and pooled hidden states (n, dim) float64 for unscaled
    features x, as the Predictor computes them."""
    logits, embeddings = predictor.logits_features(x)
    return logits.astype(np.float64), embeddings.astype(np.float64)


def comparison(outputs: dict, training: tuple, statistics: dict) -> tuple[list[str], dict[str, dict[str, float | None]]]:
    """AUROC of each method (rows) for each out-set (columns); in = validation. statistics: name
    -> ood.clip_statistics of that set's inputs (the two-space k-NN needs them)."""
    gaussians = ood.fit_class_gaussians(training[1], training[2])
    two_spaces = ood.fit_two_spaces(training[1], statistics["training"], (outputs["validation"][1], statistics["validation"]))
    scores = {name: ood.all_scores(z, e, gaussians, training[1]) | {"knn_combined": ood.two_space_score(e, statistics[name], two_spaces)}
              for name, (z, e, _) in outputs.items()}
    sets = {"test (other soundfont)": ["test"], NON_INSTRUMENT: [NON_INSTRUMENT], "test + non-instrument": ["test", NON_INSTRUMENT],
            "held-out chain (confirm)": ["validation_shift"], "held-out programs (confirm)": ["validation_program"]}
    sets |= {name: [name] for name in scores if name.startswith(KIND_PREFIX)}  # each non-instrument kind alone
    sets = {label: names for label, names in sets.items() if all(n in scores for n in names)}
    table = {method: {label: ood.auroc(scores["validation"][method], np.concatenate([scores[n][method] for n in names]))
                      for label, names in sets.items()} for method in scores["validation"]}
    return list(sets), table


def print_table(columns: list[str], table: dict) -> None:
    """The AUROC table as Markdown (docs/TRUST.md takes it as it is)."""
    print("\nOOD AUROC (in = validation clips; sklearn roc_auc_score)\n")
    print("| method | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for method, row in table.items():
        print(f"| {method} | " + " | ".join(_f(row[c]) for c in columns) + " |")


def print_calibration(outputs: dict, temperature: float | None, reason: str | None) -> dict:
    """Per labelled split: ECE and NLL before/after T; non-instrument: mean top probability."""
    print(f"\ncalibration: {calibration.METHOD}; T = {_f(temperature)}" + (f" ({reason})" if reason else ""))
    print(f"  {calibration.ECE_METHOD}; {calibration.NLL_METHOD}")
    reports = {}
    for name, (z, _, y) in outputs.items():
        if name == NON_INSTRUMENT:
            before, after = (calibration.scaled_probs(z, t).max(axis=1).mean() for t in (None, temperature))
            print(f"  {name:<20} no true instrument: mean top probability {before:.3f} -> {after:.3f}")
            continue
        r = reports[name] = calibration.split_report(z, y, temperature)
        print(f"  {name:<20} n={r['n']:<5} ECE {_f(r['ece_before'])} -> {_f(r['ece_after'])}   "
              f"NLL {_f(r['nll_before'])} -> {_f(r['nll_after'])}")
    return reports


def print_verdicts(outputs: dict, stats: dict, reference: np.ndarray | None, statistics: dict) -> None:
    """Share flagged and accuracy among accepted vs flagged, with the run's method and threshold."""
    print(f"\nverdicts: {stats['method']} > threshold {stats['threshold']:.3f} (fixed at "
          f"{stats['accept_rate']:.0%} of validation accepted)")
    for name, (z, e, y) in outputs.items():
        flagged = ood.unlike_training(score(stats, z, e, reference, statistics[name]), stats["threshold"])
        line = f"  {name:<20} flagged {flagged.mean():.1%} of {len(flagged)}"
        if y is not None:
            right = z.argmax(axis=1) == y
            line += (f"; accuracy accepted {_f(right[~flagged].mean() if (~flagged).any() else None)}, "
                     f"flagged {_f(right[flagged].mean() if flagged.any() else None)}")
        print(line)


def _f(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="demo:tiny, 3 epochs, 3 clips per kind (CI)")
    parser.add_argument("--run", help="a stored run's id instead of training one")
    parser.add_argument("--per-kind", type=int, default=40, help="synthetic non-instrument clips per kind")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    config = RECOMMENDED.with_values(data="demo:default")
    per_kind = args.per_kind
    if args.quick:
        config, per_kind = RECOMMENDED.with_values(data="demo:tiny", **{"train.epochs": 3}), 3
    data = load_data(config)
    predictor = trained_predictor(config, data, args.run)
    x_probe, kinds = probe_features(config, per_kind)
    outputs = {name: (*logits_and_embeddings(predictor, fs.x), np.asarray(fs.y)) for name, fs in data.items()}
    outputs[NON_INSTRUMENT] = (*logits_and_embeddings(predictor, x_probe), None)
    statistics = {name: ood.clip_statistics(fs.x) for name, fs in data.items()} | {NON_INSTRUMENT: ood.clip_statistics(x_probe)}
    training = outputs.pop("training")
    by_kind = {KIND_PREFIX + kind: tuple(a[np.asarray(kinds) == kind] for a in outputs[NON_INSTRUMENT][:2]) + (None,)
               for kind in dict.fromkeys(kinds)}
    statistics |= {KIND_PREFIX + kind: statistics[NON_INSTRUMENT][np.asarray(kinds) == kind] for kind in dict.fromkeys(kinds)}
    columns, table = comparison(outputs | by_kind, training, statistics)
    print_table(columns, table)
    cal = predictor.trust["calibration"] or {}
    if cal.get("temperature") is not None:
        print(f"\ntemperature fitted on {fitted_on_words(cal)} ({cal['n_fit']} clips; test never)")
    reports = print_calibration(outputs, predictor.temperature, cal.get("reason"))
    stats = predictor.trust["ood"]
    if not stats or stats.get("threshold") is None:
        print(f"\n{(stats or {}).get('reason') or 'the run has no out-of-distribution check (trained before it existed)'}")
        return 1
    if stats["key"] not in table:
        print(f"\nthe run's check ({stats['method']}) is not among the methods compared here; retrain it")
        return 1
    print_verdicts(outputs, stats, predictor.ood_reference, statistics)
    chosen = table[stats["key"]]["test + non-instrument"]
    print(f"ood_auroc: {chosen:.3f} | ece_test_before: {reports['test']['ece_before']:.3f} | "
          f"ece_test_after: {reports['test']['ece_after']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
