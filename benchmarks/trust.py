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
  (features.load_heldout_validation) and the held-out GM programs (demo only); and instruments
  outside the 8 classes (engine.data.probes.other_instrument_clips: 8 GM programs no class plays,
  rendered from the training soundfont as the demo's training clips are; skipped for a dataset
  with classes of its own), together and each alone;
- with the run's own method and threshold (95% of validation accepted): the share flagged and
  the accuracy among accepted vs flagged clips, per split, and the share of the other
  instruments flagged, together and per instrument (for the probe sets, with the class they are
  most often called).

    python benchmarks/trust.py                 # demo:default, recommended preset, ~3-6 min on 2 cores
    python benchmarks/trust.py --quick         # demo:tiny, 3 epochs, 3 clips per kind, 1 per other instrument: under a minute
    python benchmarks/trust.py --run RUN_ID    # a stored run's model instead of training one
    python benchmarks/trust.py --runs A,B,C    # a stored seed group: each seed and their deep ensemble
    python benchmarks/trust.py --seeds 3       # train 3 seeds as a group, then as --runs

With a seed group (`--runs` or `--seeds`), one more table: for each seed and for their deep
ensemble (engine.predict.ensemble: the seeds' probabilities pooled, then calibrated; OOD score the
mean of the seeds', threshold `EnsemblePredictor.ood_threshold`), accuracy, ECE and NLL per split, the OOD AUROC (in:
validation; out: test and non-instrument audio together; and out: the other instruments) and the
share of validation, test and the other instruments flagged;
the last line is then the ensemble's (`ece_test_before`: the mean of the seeds' plain softmax).

Last line: `ood_auroc: A | ece_test_before: B | ece_test_after: C` (A: the run's method, in =
validation, out = test split and non-instrument audio together; the other instruments are not in it).
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
from engine.core.labels import class_names_of  # noqa: E402
from engine.data.dataset import resolve_dataset  # noqa: E402
from engine.features.extract import FeatureSet, clip_features, load_features, load_heldout_validation, load_program_validation, load_source_validation  # noqa: E402
from engine.predict.ensemble import EnsemblePredictor  # noqa: E402
from engine.predict.predictor import Predictor  # noqa: E402
from engine.learn.presets import RECOMMENDED  # noqa: E402
from engine.data.demo import REVERSED, _soundfont_paths  # noqa: E402
from engine.data.probes import non_instrument_clips, other_instrument_clips  # noqa: E402
from engine.learn.metrics import CROSS_VALIDATION_KEYS  # noqa: E402
from engine.features.outliers import load_outlier_features  # noqa: E402
from engine.learn.train import OUTLIERS, train_run  # noqa: E402
from engine.learn.trust import CALIBRATION_VIEWS, fitted_on_words, score  # noqa: E402

NON_INSTRUMENT = "non-instrument"
KIND_PREFIX = "kind: "
OTHER = "other instruments"  # instruments outside the 8 classes (engine.data.probes.OTHER_INSTRUMENTS)
INSTRUMENT_PREFIX = "instrument: "


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


def other_instrument_features(config, per_program: int, seed: int = 0) -> tuple[np.ndarray, list[str]] | None:
    """Features (n, frames, features) of `per_program` clips of each instrument outside the 8
    classes, and each one's instrument name; None for a dataset with classes of its own (which
    instruments are outside them is not known). Rendered from the soundfont the demo trains on
    (Merlin for demo:reversed, else TimGM6mb), resampled as the run's features load audio."""
    if config.classes:
        return None
    fc = config.features
    font = _soundfont_paths()[1] if config.data == f"demo:{REVERSED}" else None
    clips = other_instrument_clips(per_program, fc.sample_rate, fc.clip_samples, seed, soundfont=font, resampler=fc.resampler)
    names = [name for name, ys in clips.items() for _ in ys]
    return np.stack([clip_features(y, fc) for ys in clips.values() for y in ys]).astype(np.float32), names


def per_label(output: tuple, stats: np.ndarray, labels: list[str], prefix: str) -> tuple[dict, dict]:
    """A probe set cut by label: prefix + label -> (logits, embeddings, None) of its clips, and
    prefix + label -> their clip statistics (rows of `stats`), labels in first-seen order."""
    labels_ = np.asarray(labels)
    names = dict.fromkeys(labels)
    return ({prefix + n: (output[0][labels_ == n], output[1][labels_ == n], None) for n in names},
            {prefix + n: stats[labels_ == n] for n in names})


def training_data(config, data: dict) -> dict[str, FeatureSet]:
    """What a run trains on, as the dashboard's runs get it: the splits and cross-collection views
    of `data`, and the outlier clips when the configuration uses outlier exposure."""
    kept = {k: v for k, v in data.items() if k in ("training", "validation", "test", *CROSS_VALIDATION_KEYS)}
    if config.train.outlier_exposure > 0:
        kept[OUTLIERS] = load_outlier_features(config.features, config.data)
    return kept


def trained_predictor(config, data: dict, run_id: str | None) -> Predictor:
    """The Predictor (with its run's calibration and OOD records) of a stored run, or of a run
    trained here with train_run."""
    if run_id:
        from engine.runs.store import RunStore

        return Predictor.from_store(RunStore(), run_id)
    started = time.perf_counter()
    result = train_run(config, training_data(config, data), device="cpu")
    print(f"trained {config.train.epochs} epochs in {time.perf_counter() - started:.0f} s "
          f"(validation accuracy {result.metrics['validation']['accuracy']:.3f}, "
          f"test {result.metrics['test']['accuracy']:.3f})")
    return Predictor(config, result.state_dict, result.standardizer, metrics=result.metrics,
                     ood_reference=result.ood_reference)


def trained_group(config, data: dict, seeds: int) -> tuple[EnsemblePredictor, list[dict]]:
    """The ensemble of `seeds` runs of `config` (seeds 0..seeds-1), trained one after another with
    train_run; its temperature fitted on their predictions of the validation views, as from the store."""
    members, predictions = [], []
    for seed in range(seeds):
        member = config.with_values(**{"train.seed": seed})
        result = train_run(member, training_data(member, data), device="cpu")
        print(f"seed {seed}: validation accuracy {result.metrics['validation']['accuracy']:.3f}")
        members.append(Predictor(member, result.state_dict, result.standardizer, metrics=result.metrics,
                                 ood_reference=result.ood_reference, run_id=f"seed {seed}"))
        predictions.append(result.predictions)
    return EnsemblePredictor(members, predictions), predictions


def stored_group(run_ids: list[str]) -> tuple[EnsemblePredictor, list[dict]]:
    """The ensemble of stored runs `run_ids` (one configuration's seeds), as the Predict page loads
    it, and their stored predictions."""
    from engine.runs.store import RunStore

    store = RunStore()
    return EnsemblePredictor.from_store(store, run_ids), [store.load_predictions(run_id) for run_id in run_ids]


def calibration_choice(predictions: list[dict]) -> None:
    """How to calibrate an ensemble, on the validation views alone (never test): each view left out
    in turn, temperatures fitted on the others; ECE / NLL of the view left out for the seeds alone
    (mean), (a) the mean of the seeds' calibrated probabilities, (b) the mean of their plain
    probabilities, (c) the mean of the plain probabilities, then one temperature (what
    engine.predict.ensemble does). From the stored (6-decimal) probabilities."""
    views = [v for v in CALIBRATION_VIEWS if all(v in p for p in predictions)]
    y = {v: np.asarray(predictions[0][v]["y"]) for v in views}
    probs = {v: [np.asarray(p[v]["probs"], dtype=np.float64) for p in predictions] for v in views}
    pooled = {v: calibration.logits_from_probs(np.mean(probs[v], axis=0)) for v in views}

    def fit(logits: list[np.ndarray], names: list[str]) -> float:
        return calibration.fit_temperature(np.concatenate(logits), np.concatenate([y[v] for v in names]))

    def figures(p: np.ndarray, view: str) -> np.ndarray:
        return np.array([calibration.expected_calibration_error(p, y[view]),
                         calibration.negative_log_likelihood(calibration.logits_from_probs(p), y[view])])

    print("\nCalibrating the ensemble, decided on validation views only (ECE / NLL of the view left out)\n")
    print("| left out | seeds alone (mean) | (a) mean of calibrated seeds | (b) mean of plain seeds | (c) mean, then one T |")
    print("|---|---:|---:|---:|---:|")
    totals = []
    for out in views:
        rest = [v for v in views if v != out]
        own = [calibration.scaled_probs(calibration.logits_from_probs(probs[out][i]),
                                        fit([calibration.logits_from_probs(probs[v][i]) for v in rest], rest))
               for i in range(len(predictions))]
        row = [np.mean([figures(p, out) for p in own], axis=0), figures(np.mean(own, axis=0), out),
               figures(np.mean(probs[out], axis=0), out),
               figures(calibration.scaled_probs(pooled[out], fit([pooled[v] for v in rest], rest)), out)]
        totals.append(row)
        print(f"| {out} | " + " | ".join(f"{e:.3f} / {n:.3f}" for e, n in row) + " |")
    print("| mean | " + " | ".join(f"{e:.3f} / {n:.3f}" for e, n in np.mean(totals, axis=0)) + " |")


def ensemble_rows(ensemble: EnsemblePredictor, data: dict, x_probe: np.ndarray, statistics: dict,
                  x_other: np.ndarray | None = None) -> dict[str, dict]:
    """Row per seed and for their ensemble: accuracy / ECE / NLL (calibrated) per labelled set,
    test ECE before calibration, OOD AUROC (in: validation; out: test + non-instrument; and, given
    `x_other`, the other instruments' features) and share of validation and test (and the other
    instruments) flagged at each one's threshold (the ensemble's: EnsemblePredictor.ood_threshold)."""
    members = ensemble.members
    sets = [(n, fs.x) for n, fs in data.items() if n != "training"] + [(NON_INSTRUMENT, x_probe)]
    sets += [(OTHER, x_other)] if x_other is not None else []
    models: dict[str, dict] = {m.run_id: {} for m in members} | {f"ensemble of {len(members)}": {}}
    for name, x in sets:
        logits, scores = [], []
        for m in members:
            z, e = m.logits_features(x)
            logits.append(z)
            scores.append(score(m.trust["ood"], z, e, m.ood_reference, statistics[name]))
            models[m.run_id][name] = (m.probabilities(z, calibrated=False), m.probabilities(z), scores[-1])
        plain = np.mean([m.probabilities(z, calibrated=False) for m, z in zip(members, logits)], axis=0)
        models[f"ensemble of {len(members)}"][name] = (plain, ensemble.ensemble_probabilities(logits), np.mean(scores, axis=0))
    thresholds = [m.trust["ood"]["threshold"] for m in members] + [ensemble.ood_threshold()[0]]
    labels = {name: np.asarray(fs.y) for name, fs in data.items() if name != "training"}
    rows = {}
    for (model, out), threshold in zip(models.items(), thresholds):
        row: dict[str, float | None] = {}
        for name, y in labels.items():
            probs = out[name][1]
            row[f"{name} acc"] = float((probs.argmax(axis=1) == y).mean())
            row[f"{name} ECE"] = calibration.expected_calibration_error(probs, y)
            row[f"{name} NLL"] = calibration.negative_log_likelihood(calibration.logits_from_probs(probs), y)
        row["test ECE before"] = calibration.expected_calibration_error(out["test"][0], labels["test"])
        row["AUROC test + non-instr."] = ood.auroc(out["validation"][2], np.concatenate([out["test"][2], out[NON_INSTRUMENT][2]]))
        if OTHER in out:
            row["AUROC other instruments"] = ood.auroc(out["validation"][2], out[OTHER][2])
        row["validation flagged"] = float((out["validation"][2] > threshold).mean())
        row["test flagged"] = float((out["test"][2] > threshold).mean())
        if OTHER in out:
            row["other instruments flagged"] = float((out[OTHER][2] > threshold).mean())
        rows[model] = row
    return rows


def print_rows(rows: dict[str, dict]) -> None:
    """The seeds-and-ensemble table as Markdown: one row per figure, one column per model."""
    models = list(rows)
    print("\nSeeds and their deep ensemble (calibrated probabilities; ECE: top-label, 15 bins; NLL: nats per clip)\n")
    print("| figure | " + " | ".join(models) + " |")
    print("|---|" + "---:|" * len(models))
    for figure in rows[models[0]]:
        print(f"| {figure} | " + " | ".join(_f(rows[m][figure]) for m in models) + " |")


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
            "held-out chain (confirm)": ["validation_shift"], "held-out programs (confirm)": ["validation_program"],
            OTHER: [OTHER]}
    sets |= {name: [name] for name in scores if name.startswith(KIND_PREFIX)}  # each non-instrument kind alone
    sets |= {name: [name] for name in scores if name.startswith(INSTRUMENT_PREFIX)}  # each other instrument alone
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
    """Per labelled split: ECE and NLL before/after T; probe sets (no class of the model's): mean top probability."""
    print(f"\ncalibration: {calibration.METHOD}; T = {_f(temperature)}" + (f" ({reason})" if reason else ""))
    print(f"  {calibration.ECE_METHOD}; {calibration.NLL_METHOD}")
    reports = {}
    for name, (z, _, y) in outputs.items():
        if y is None:
            before, after = (calibration.scaled_probs(z, t).max(axis=1).mean() for t in (None, temperature))
            truth = "no true instrument" if name == NON_INSTRUMENT else "none of the classes"
            print(f"  {name:<20} {truth}: mean top probability {before:.3f} -> {after:.3f}")
            continue
        r = reports[name] = calibration.split_report(z, y, temperature)
        print(f"  {name:<20} n={r['n']:<5} ECE {_f(r['ece_before'])} -> {_f(r['ece_after'])}   "
              f"NLL {_f(r['nll_before'])} -> {_f(r['nll_after'])}")
    return reports


def print_verdicts(outputs: dict, stats: dict, reference: np.ndarray | None, statistics: dict,
                   classes: tuple[str, ...]) -> None:
    """Share flagged and accuracy among accepted vs flagged, with the run's method and threshold;
    for a set without labels (probes), the class it is most often called (`classes`: the model's)."""
    print(f"\nverdicts: {stats['method']} > threshold {stats['threshold']:.3f} (fixed at "
          f"{stats['accept_rate']:.0%} of validation accepted)")
    width = max(20, *(len(name) for name in outputs))
    for name, (z, e, y) in outputs.items():
        flagged = ood.unlike_training(score(stats, z, e, reference, statistics[name]), stats["threshold"])
        line = f"  {name:<{width}} flagged {flagged.mean():.1%} of {len(flagged)}"
        if y is not None:
            right = z.argmax(axis=1) == y
            line += (f"; accuracy accepted {_f(right[~flagged].mean() if (~flagged).any() else None)}, "
                     f"flagged {_f(right[flagged].mean() if flagged.any() else None)}")
        elif len(z):
            called = np.bincount(z.argmax(axis=1), minlength=len(classes))
            line += f"; most often called {classes[called.argmax()]} ({called.max() / len(z):.0%})"
        print(line)


def _f(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="demo:tiny, 3 epochs, 3 clips per kind, 1 per other instrument (CI)")
    parser.add_argument("--run", help="a stored run's id instead of training one")
    parser.add_argument("--per-kind", type=int, default=40, help="synthetic non-instrument clips per kind")
    parser.add_argument("--per-program", type=int, default=20, help="clips per instrument outside the 8 classes")
    parser.add_argument("--runs", help="stored runs of one configuration (comma-separated): the seeds and their ensemble")
    parser.add_argument("--seeds", type=int, default=0, help="train this many seeds as a group, then as --runs")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    config = RECOMMENDED.with_values(data="demo:default")
    per_kind, per_program = args.per_kind, args.per_program
    if args.quick:
        config, per_kind, per_program = RECOMMENDED.with_values(data="demo:tiny", **{"train.epochs": 3}), 3, 1
    stored = args.run or (args.runs.split(",")[0] if args.runs else None)
    if stored:  # a stored run is measured on its own dataset and features, whatever it was trained on
        from engine.runs.store import RunStore

        config = RunStore().get(stored).config
        print(f"data: {config.data or 'the default dataset'} (that of run {stored})")
    data = load_data(config)
    if args.runs or args.seeds > 1:
        return ensemble_benchmark(config, data, args, per_kind, per_program)
    predictor = trained_predictor(config, data, args.run)
    x_probe, kinds = probe_features(config, per_kind)
    outputs = {name: (*logits_and_embeddings(predictor, fs.x), np.asarray(fs.y)) for name, fs in data.items()}
    outputs[NON_INSTRUMENT] = (*logits_and_embeddings(predictor, x_probe), None)
    statistics = {name: ood.clip_statistics(fs.x) for name, fs in data.items()} | {NON_INSTRUMENT: ood.clip_statistics(x_probe)}
    by_instrument = other_instruments(predictor, config, per_program, outputs, statistics)
    training = outputs.pop("training")
    by_kind, kind_statistics = per_label(outputs[NON_INSTRUMENT], statistics[NON_INSTRUMENT], kinds, KIND_PREFIX)
    statistics |= kind_statistics
    columns, table = comparison(outputs | by_kind | by_instrument, training, statistics)
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
    print_verdicts(outputs | by_instrument, stats, predictor.ood_reference, statistics, class_names_of(predictor))
    chosen = table[stats["key"]]["test + non-instrument"]
    print(f"ood_auroc: {chosen:.3f} | ece_test_before: {reports['test']['ece_before']:.3f} | "
          f"ece_test_after: {reports['test']['ece_after']:.3f}")
    return 0


def other_instruments(predictor: Predictor, config, per_program: int, outputs: dict, statistics: dict) -> dict:
    """Adds the other instruments (OTHER) to `outputs` and `statistics` (in place) and returns them
    per instrument (INSTRUMENT_PREFIX + name -> (logits, embeddings, None)), their statistics
    added too; {} and nothing added where other_instrument_features gives None."""
    other = other_instrument_features(config, per_program)
    if other is None:
        return {}
    x_other, names = other
    outputs[OTHER] = (*logits_and_embeddings(predictor, x_other), None)
    statistics[OTHER] = ood.clip_statistics(x_other)
    by_instrument, instrument_statistics = per_label(outputs[OTHER], statistics[OTHER], names, INSTRUMENT_PREFIX)
    statistics |= instrument_statistics
    return by_instrument


def ensemble_benchmark(config, data: dict, args: argparse.Namespace, per_kind: int, per_program: int) -> int:
    """The seeds-and-ensemble table (--runs / --seeds) and its last line (the ensemble's figures)."""
    ensemble, predictions = stored_group(args.runs.split(",")) if args.runs else trained_group(config, data, args.seeds)
    if any(not m.trust["ood"] or m.trust["ood"].get("threshold") is None for m in ensemble.members):
        print("every run of the group needs a fitted out-of-distribution check; retrain the ones without")
        return 1
    calibration_choice(predictions)
    print(f"\nensemble: {ensemble.calibration}")
    x_probe, _ = probe_features(config, per_kind)
    statistics = {name: ood.clip_statistics(fs.x) for name, fs in data.items()} | {NON_INSTRUMENT: ood.clip_statistics(x_probe)}
    other = other_instrument_features(config, per_program)
    if other is not None:
        statistics[OTHER] = ood.clip_statistics(other[0])
    rows = ensemble_rows(ensemble, data, x_probe, statistics, None if other is None else other[0])
    print_rows(rows)
    last = rows[f"ensemble of {len(ensemble.members)}"]
    print(f"ood_auroc: {last['AUROC test + non-instr.']:.3f} | ece_test_before: {last['test ECE before']:.3f} | "
          f"ece_test_after: {last['test ECE']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
