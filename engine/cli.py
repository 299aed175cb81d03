"""Command line: data, features, train, ablate, search, confirm, runs, show, compare, predict, flips, agreement, export.

Machine-readable forms (`--json`) print exactly one JSON document on stdout; progress bars
and messages go to stderr. Exit status 0 on success, 1 when the work failed, 2 on bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from .core.config import RunConfig, config_from_values
from .core.errors import EngineError
from .core.space import format_bytes, free_bytes
from .learn.metrics import CROSS_VALIDATION_KEYS, EVAL_SPLITS, lacks_program_view
from .runs.naming import preset_run_name

# Flags that set one configuration value each: flag -> (dotted name, type).
FEATURE_FLAGS = {
    "representation": ("features.representation", str),
    "frames": ("features.frames", "frames"),
    "chroma": ("features.chroma", bool),
    "deltas": ("features.deltas", bool),
    "inputs": ("features.inputs", str),
    "clip_norm": ("features.clip_norm", bool),
}
MODEL_FLAGS = {
    "arch": ("model.arch", str),
    "hidden": ("model.hidden_size", int),
    "layers": ("model.num_layers", int),
    "dropout": ("model.dropout", float),
    "bidirectional": ("model.bidirectional", bool),
    "pooling": ("model.pooling", str),
    "extra_hidden": ("model.extra_hidden", int),
}
TRAIN_FLAGS = {
    "optimizer": ("train.optimizer", str),
    "lr": ("train.lr", float),
    "batch_size": ("train.batch_size", int),
    "epochs": ("train.epochs", int),
    "momentum": ("train.momentum", float),
    "rho": ("train.rho", float),
    "eps": ("train.eps", float),
    "weight_decay": ("train.weight_decay", float),
    "seed": ("train.seed", int),
    "standardize": ("train.standardize", bool),
    "class_weighting": ("train.class_weighting", bool),
    "select": ("train.select", str),
    "grad_clip": ("train.grad_clip", float),
    "precision": ("train.precision", str),
    "augment": ("train.augment", str),
    "augment_views": ("train.augment_views", int),
    "augment_seed": ("train.augment_seed", int),
    "time_mask": ("train.time_mask", int),
    "freq_mask": ("train.freq_mask", int),
    "mixup": ("train.mixup", float),
    "outlier_exposure": ("train.outlier_exposure", float),
}
FLAG_HELP = {
    "representation": "spectral (MFCC + centroid + contrast), logmel (128 mel bands in dB), "
                      "pcen (128 mel bands, per-channel energy normalised) or waveform",
    "clip_norm": "per-clip mean/variance normalisation of every feature (CMVN)",
    "arch": "study, study_2plus1, sequence, waveform or linear (no LSTM: one layer on each feature's clip mean and spread)",
    "augment": "comma-separated audio augmentations of the training clips: gain, eq, speed, noise ('' = none)",
    "augment_views": "augmented copies of each training clip (cached; each epoch reads the clean clip or one copy)",
    "augment_seed": "seed of the augmented copies",
    "time_mask": "SpecAugment: mask up to N consecutive frames per training clip (0 = off)",
    "freq_mask": "SpecAugment: mask up to N consecutive feature rows per training clip (0 = off)",
    "mixup": "mixup: mix each training batch with a shuffled copy, weight ~ Beta(A, A) (0 = off; 0.2 usual)",
    "outlier_exposure": "outlier exposure: train to be unsure of instruments outside the 8 classes, loss weight W "
                        "(0 = off; 0.5 usual)",
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cache:
        os.environ["MEDLEY_CACHE"] = str(Path(args.cache).expanduser())
    try:
        with _backend_env(args):
            return args.handler(args)
    except BrokenPipeError:  # `engine runs | head`: the reader left; stop quietly like other tools
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail again
        return 141  # 128 + SIGPIPE, as a shell reports it
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Terminated:
        print("stopped (SIGTERM)", file=sys.stderr)
        return 143  # 128 + SIGTERM, as a shell reports it
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description="Train, compare and use instrument classifiers.")
    parser.add_argument("--cache", help="cache folder (default ./cache or $MEDLEY_CACHE)")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="dataset commands").add_subparsers(dest="data_command", required=True)
    summary = data.add_parser("summary", help="counts per split and class, problems found")
    _add_data_flag(summary)
    summary.add_argument("--json", action="store_true")
    summary.set_defaults(handler=cmd_data_summary)
    demo = data.add_parser("demo", help="make the built-in demo dataset")
    demo.add_argument("--size", default="default", choices=["tiny", "default", "full"])
    demo.set_defaults(handler=cmd_data_demo)

    features = sub.add_parser("features", help="extract and cache features for all splits")
    _add_data_flag(features)
    _add_flags(features, FEATURE_FLAGS)
    features.set_defaults(handler=cmd_features)

    train = sub.add_parser("train", help="train one configuration")
    _add_run_flags(train)
    train.add_argument("--name", help="run name")
    train.add_argument("--tags", default="", help="comma-separated tags")
    train.add_argument("--seeds", help=SEEDS_HELP + " (overrides --seed); seed repeats of the study models train "
                                       "as one group")
    train.set_defaults(handler=cmd_train)

    ablate = sub.add_parser("ablate", help="run a whole ablation and print a table")
    _add_run_flags(ablate)
    ablate.add_argument("--seeds", default=None,
                        help=SEEDS_HELP + ": every row once per seed (default: 3 seeds for robustness, else --seed)")
    ablate.set_defaults(handler=cmd_ablate)

    for name, help_text in (("resume", "continue an interrupted, cancelled or failed run from its last saved epoch"),
                            ("restart", "train a run's configuration again as a new run")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("run_id")
        p.add_argument("--device", help="cpu or cuda (default: cuda when present)")
        p.add_argument("--json", action="store_true", help="print one JSON object at the end")
        _add_backend_flags(p)
        p.set_defaults(handler=cmd_resume if name == "resume" else cmd_restart)

    runs = sub.add_parser("runs", help="list runs")
    runs.add_argument("--status", help="only runs with this status")
    runs.add_argument("--tag", help="only runs with this tag")
    runs.add_argument("--json", action="store_true")
    runs.add_argument("--rebuild", action="store_true",
                      help="set a damaged run store aside and rebuild it from the run folders, then list")
    runs.set_defaults(handler=cmd_runs)

    show = sub.add_parser("show", help="one run in full")
    show.add_argument("run_id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=cmd_show)

    for name, handler, extra in (("rename", cmd_rename, "name"), ("tag", cmd_tag, "tags"), ("delete", cmd_delete, None)):
        p = sub.add_parser(name, help=f"{name} a run")
        p.add_argument("run_id")
        if extra:
            p.add_argument(extra, help="comma-separated tags" if extra == "tags" else "new name")
        p.set_defaults(handler=handler)

    compare = sub.add_parser("compare", help="is B better than A? two runs or two seed groups, one honest test")
    compare.add_argument("a", help="run id, or comma-separated run ids of a seed group (the reference)")
    compare.add_argument("b", help="run id, or comma-separated run ids of a seed group")
    compare.add_argument("--split", choices=["validation", "test"], default="validation",
                         help="validation (default: choose on validation) or test (the final report)")
    compare.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    compare.add_argument("--json", action="store_true", help="print one JSON object")
    compare.set_defaults(handler=cmd_compare)

    predict = sub.add_parser("predict", help="predict the instrument of audio files with a stored run")
    predict.add_argument("--run", required=True, help="run id (see `runs`), or several separated by commas")
    predict.add_argument("files", nargs="+")
    predict.add_argument("--ensemble", action="store_true",
                         help="average each run with the other finished seeds of its configuration (a deep ensemble: "
                              "usually more accurate and better calibrated on unheard audio)")
    predict.add_argument("--json", action="store_true")
    predict.set_defaults(handler=cmd_predict)

    flips = sub.add_parser("flips", help="the clips whose prediction changed between run(s) A and run(s) B")
    flips.add_argument("a", help="run id, or comma-separated run ids of a seed group (A, the reference)")
    flips.add_argument("b", help="run id, or comma-separated run ids (B)")
    flips.add_argument("--split", default="validation", choices=["validation", "test"])
    flips.add_argument("--limit", type=int, default=10, help="clips listed per kind without --json (default 10)")
    flips.add_argument("--json", action="store_true")
    flips.set_defaults(handler=cmd_flips)

    agree = sub.add_parser("agreement", help="how often runs predict the same label (share and Cohen's kappa)")
    agree.add_argument("runs", help="comma-separated run ids (two or more)")
    agree.add_argument("--split", default="validation", choices=["validation", "test"])
    agree.add_argument("--json", action="store_true")
    agree.set_defaults(handler=cmd_agreement)

    search = sub.add_parser("search", help="hyperparameter search with Optuna (TPE + pruning); trials are runs")
    _add_search_flags(search)
    search.set_defaults(handler=cmd_search)

    confirm = sub.add_parser("confirm", help="retrain a search's top configurations and the preset with fresh "
                                             "seeds: is the winner better beyond the seed spread?")
    confirm.add_argument("search", help="the search's name")
    confirm.add_argument("--top", type=int, default=3, help="configurations to confirm (default 3)")
    confirm.add_argument("--seeds", default="5", help="fresh seeds per configuration: a count N (the N seeds after "
                         "the search's; default 5) or a comma-separated list; never one the search used")
    confirm.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    confirm.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    confirm.add_argument("--json", action="store_true", help="print the verdict as one JSON object")
    _add_backend_flags(confirm)
    confirm.set_defaults(handler=cmd_confirm)

    export = sub.add_parser("export", help="export runs and metrics as CSV")
    export.add_argument("--out", help="CSV file (default: stdout)")
    export.set_defaults(handler=cmd_export)

    export_model = sub.add_parser("export-model", help="write a run's trained model: a bundle (zip) and/or ONNX")
    export_model.add_argument("run_id")
    export_model.add_argument("--bundle", metavar="OUT.zip", help="the model bundle: config, weights, class names, "
                              "standardiser (engine.runs.export.load_bundle reads it)")
    export_model.add_argument("--onnx", metavar="OUT.onnx", help="an ONNX model (opset 17, dynamic batch) with class "
                              "names, feature settings, standardiser and temperature in its metadata; needs "
                              "pip install -r requirements-onnx.txt")
    export_model.set_defaults(handler=cmd_export_model)
    return parser


def _add_backend_flags(parser: argparse.ArgumentParser) -> None:
    """--backend, --ray-address, --ray-cpus, --ray-gpus: where the runs train (engine.runs.ray_backend)."""
    parser.add_argument("--backend", choices=["local", "ray"],
                        help="local: this machine (default, or $MEDLEY_BACKEND); ray: tasks on a Ray cluster "
                             "(pip install -r requirements-ray.txt)")
    parser.add_argument("--ray-address", help="'local' (a Ray started here, the default) or host:port of a "
                                              "cluster's head ($MEDLEY_RAY_ADDRESS)")
    parser.add_argument("--ray-cpus", type=float, help="CPUs per run on Ray (default 1; $MEDLEY_RAY_CPUS)")
    parser.add_argument("--ray-gpus", type=float,
                        help="GPUs per run on Ray, a fraction shares one: 0.25 (default 0; $MEDLEY_RAY_GPUS)")


@contextlib.contextmanager
def _backend_env(args: argparse.Namespace) -> Iterator[None]:
    """The backend flags given, as the environment variables the JobManager reads, for the
    command's duration (restored after: `main` may run in a longer-lived process)."""
    from .runs.ray_backend import ADDRESS_ENV, BACKEND_ENV, CPUS_ENV, GPUS_ENV

    saved = {}
    for flag, name in (("backend", BACKEND_ENV), ("ray_address", ADDRESS_ENV), ("ray_cpus", CPUS_ENV),
                       ("ray_gpus", GPUS_ENV)):
        value = getattr(args, flag, None)
        if value is not None:
            saved[name] = os.environ.get(name)
            os.environ[name] = str(value)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _add_search_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", help="the search's name (default search-<date>-<time>)")
    parser.add_argument("--resume", metavar="NAME", help="continue a stored search (cache/search.sqlite)")
    parser.add_argument("--space", help="a JSON or TOML file of dotted names -> ranges or choices "
                                        "(default: engine.core.search_space.DEFAULT_SPACE)")
    parser.add_argument("--trials", type=int, default=20, help="trials in all (default 20)")
    parser.add_argument("--pruner", default="median", choices=["median", "halving", "none"])
    parser.add_argument("--sampler-seed", type=int, default=0, help="seed of the TPE sampler (default 0)")
    _add_run_flags(parser)
    parser.set_defaults(preset="recommended")


def _add_data_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="Medley-solos-DB folder, your own dataset (a folder with one folder per class, "
                        "or a path,label[,split][,group] CSV file), or demo / demo:tiny (default: $MEDLEY_DATA, "
                        "~/mir_datasets/medley_solos_db, else the demo dataset)")


def _add_flags(parser: argparse.ArgumentParser, flags: dict[str, tuple[str, Any]]) -> None:
    for flag, (dotted, kind) in flags.items():
        name = "--" + flag.replace("_", "-")
        text = f"{dotted}: {FLAG_HELP[flag]}" if flag in FLAG_HELP else dotted
        if kind is bool:
            parser.add_argument(name, dest=flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif kind == "frames":
            parser.add_argument(name, dest=flag, default=None, help="frames per clip: a number (study: 3) or 'all'")
        else:
            parser.add_argument(name, dest=flag, type=kind, default=None, help=text)


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    _add_data_flag(parser)
    parser.add_argument("--preset", default="study",
                        help="train: study or recommended; ablate: study, beyond or robustness")
    parser.add_argument("--config", help="a JSON file with a whole RunConfig (flags override single values)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    _add_backend_flags(parser)
    for flags in (FEATURE_FLAGS, MODEL_FLAGS, TRAIN_FLAGS):
        _add_flags(parser, flags)


def config_from_args(args: argparse.Namespace, base: RunConfig) -> RunConfig:
    """`base` (or the --config file) with every flag the user gave applied, through the one
    parser every front end uses (engine.core.config.config_from_values)."""
    if args.config:
        path = Path(args.config)
        if not path.exists():
            raise EngineError(f"configuration file {path} does not exist")
        base = RunConfig.from_json(path.read_text())
    return config_from_values(flag_overrides(args), base)


def flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The flags given, as dotted configuration values ({"train.lr": 0.001, "features.frames": "all"});
    values are read and checked by config_from_values."""
    values: dict[str, Any] = {}
    if getattr(args, "data", None):
        values["data"] = args.data
    for flags in (FEATURE_FLAGS, MODEL_FLAGS, TRAIN_FLAGS):
        for flag, (dotted, kind) in flags.items():
            value = getattr(args, flag, None)
            if value is None:
                continue
            if kind == "frames" and str(value).strip() == "0":
                value = None  # --frames 0: the whole clip, as --frames all
            values[dotted] = value
    return values


# ---------------------------------------------------------------- data and features


def cmd_data_summary(args: argparse.Namespace) -> int:
    from .data.dataset import resolve_dataset, summarize

    ds = resolve_dataset(args.data, progress=_progress_bar(_dataset_step(args.data)))
    info = summarize(ds)
    if args.json:
        print(json_text(info))
        return 0
    print(f"dataset: {info['root']} ({info['layout']} layout)")
    for subset, counts in info["counts"].items():
        print(f"  {subset:<10} {sum(counts.values()):>6} clips  " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"problems: {len(info['problems'])}")
    for problem in info["problems"][:20]:
        print(f"  {problem['file']}: {problem['reason']}")
    return 0


def _dataset_step(data: str | None) -> str:
    """The progress bar's label while the dataset `data` is resolved: making a demo dataset
    (which is only done when it is missing) or checking a real folder's files."""
    from .data.dataset import demo_size

    return "demo data" if demo_size(data) is not None else "checking dataset"


def cmd_data_demo(args: argparse.Namespace) -> int:
    from .data.demo import make_demo

    start = time.perf_counter()
    root = make_demo(args.size, progress=_progress_bar(f"demo ({args.size})"))
    print(f"demo dataset ({args.size}) ready at {root} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    print(root)
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    from .data.dataset import resolve_dataset
    from .features.extract import load_features

    config = config_from_values(flag_overrides(args)).features
    ds = resolve_dataset(args.data, progress=_progress_bar(_dataset_step(args.data)))
    start = time.perf_counter()
    sets = load_features(ds, config, progress=_progress_bar("features"))
    for subset, fs in sets.items():
        print(f"{subset:<10} x {tuple(fs.x.shape)}  y {tuple(fs.y.shape)}")
    print(f"done in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


# ---------------------------------------------------------------- training


def cmd_train(args: argparse.Namespace) -> int:
    from .learn.presets import PRESETS

    if args.preset not in PRESETS:
        raise EngineError(f"unknown preset {args.preset!r}; choose one of {sorted(PRESETS)}")
    config = config_from_args(args, PRESETS[args.preset])
    tags = tuple(t for t in args.tags.split(",") if t)
    preset = PRESETS[args.preset]
    if args.seeds is None:  # unnamed: named by what differs from the preset ("lr 1e-3"), as on the Train page
        name = args.name or preset_run_name(config, preset, args.preset)
        [record] = _train_and_wait([(name, config, tags)], args.device)
        return _report_run(record, args.json)
    name = args.name or preset_run_name(config.with_values(**{"train.seed": preset.train.seed}), preset, args.preset)
    seeds = parse_seeds(args.seeds, first=config.train.seed)
    records = _train_and_wait([(f"seed {s} of {name}", config.with_values(**{"train.seed": s}), tags) for s in seeds],
                              args.device)
    if args.json:
        print(json_text([run_summary(r) for r in records]))
    else:
        for record in records:
            _print_run(record)
    return 0 if all(r.status == "finished" for r in records) else 1


SEEDS_HELP = "a count N (seeds --seed .. --seed+N-1, e.g. 3 = 0,1,2) or a comma-separated list (e.g. 0,2,5)"


def parse_seeds(text: str, first: int = 0) -> list[int]:
    """--seeds in either form: a count "3" -> [first, first+1, first+2]; a list "0,2,5" ->
    [0, 2, 5] ("5," is the one seed 5). EngineError naming the bad part otherwise (a count
    of at least 1; list entries non-negative, none repeated)."""
    text = str(text).strip()
    if "," not in text:
        if not text.isdigit() or int(text) < 1:
            raise EngineError(f"--seeds takes a count of at least 1 (e.g. 3 = seeds {first},{first + 1},{first + 2}) "
                              f"or comma-separated seeds (e.g. 0,2,5); not {text!r}")
        return list(range(first, first + int(text)))
    seeds = []
    for part in (p.strip() for p in text.split(",")):
        if not part and seeds and text.rstrip().endswith(","):  # "5,": a list of one
            continue
        if not part.isdigit():
            raise EngineError(f"--seeds takes comma-separated non-negative integers, e.g. 0,1,2; not {part!r} in {text!r}")
        seeds.append(int(part))
    if len(set(seeds)) != len(seeds):
        raise EngineError(f"--seeds repeats a seed: {text!r}")
    return seeds


def ablation_base(args: argparse.Namespace) -> RunConfig:
    """The base of `ablate --preset ...` with the flags applied: the study's own base (its 2019
    inputs included) for the study's ablations, the recommended preset for robustness."""
    from .runs import launch

    return config_from_args(args, launch.ablation_base(args.preset))


def cmd_ablate(args: argparse.Namespace) -> int:
    from .runs.launch import plan_ablation, queue_ablation
    from .learn.presets import STUDY_FINAL_ROW, STUDY_REPORTED, STUDY_REPORTED_FINAL_TEST

    base = ablation_base(args)
    seeds = None if args.seeds is None else tuple(parse_seeds(args.seeds, first=base.train.seed))
    plan = plan_ablation(args.preset, base, seeds=seeds)
    records = _run_and_wait(lambda manager: queue_ablation(manager, plan), args.device)
    if any(run.seed is not None for run in plan):
        return _seeded_table(args, plan, records)
    table = []
    for run, record in zip(plan, records):
        summary = run_summary(record)
        summary["row"] = run.row
        summary["study_val_accuracy"] = STUDY_REPORTED.get(run.row) if args.preset == "study" else None
        summary["study_test_accuracy"] = STUDY_REPORTED_FINAL_TEST if (args.preset == "study" and run.row == STUDY_FINAL_ROW) else None
        table.append(summary)
    if args.json:
        print(json_text(table))
    else:
        print(format_ablation_table(table))
    return 0 if all(r.status == "finished" for r in records) else 1


def _seeded_table(args: argparse.Namespace, plan: list, records: list) -> int:
    """An ablation with every row repeated over seeds: prints mean +- seed std per row and
    which row the protocol (docs/PROTOCOL.md: cross-collection validation only) picks."""
    from .compare.ablation import format_choice, format_rows, select_by_cross_validation, summarize_rows
    from .runs.launch import plan_rows

    grouped = [(row, [rec for run, rec in zip(plan, records) if run.row == row]) for row in plan_rows(plan)]
    table = summarize_rows(grouped)
    store = _store()
    selection = select_by_cross_validation(grouped, lambda r: store.load_predictions(r.id))
    seeds = list(dict.fromkeys(run.seed for run in plan))
    if args.json:
        print(json_text({"preset": args.preset, "seeds": seeds, "rows": table,
                         "protocol_choice": selection["choice"], "protocol": selection}))
    else:
        print(format_rows(table))
        print(format_choice(selection))
    return 0 if all(r.status == "finished" for r in records) else 1


def cmd_search(args: argparse.Namespace) -> int:
    from .core.search_space import default_space, load_space
    from .learn.presets import PRESETS
    from .runs.jobs import JobManager
    from .runs.search import SearchSpec, format_summary, resume_search, search_summary, start_search

    if args.resume is None:
        if args.preset not in PRESETS:
            raise EngineError(f"unknown preset {args.preset!r}; choose one of {sorted(PRESETS)}")
        base = config_from_args(args, PRESETS[args.preset])
        space = load_space(args.space, base) if args.space else default_space(base)
        name = args.name or time.strftime("search-%Y%m%d-%H%M%S")
        spec = SearchSpec(name=name, space=space, base=base, trials=args.trials, pruner=args.pruner,
                          seed=args.sampler_seed)
    with _sigterm_raises():
        manager = JobManager(device=args.device)
        try:
            search = resume_search(args.resume, manager) if args.resume else start_search(spec, manager)
            print(f"search {search.spec.name}: {search.counted()}/{search.spec.trials} trials done", file=sys.stderr)
            search.run(on_change=lambda: print(_trial_line(search), file=sys.stderr, flush=True))
        finally:
            manager.shutdown()
    summary = search_summary(search.spec.name)
    print(json_text(summary) if args.json else format_summary(summary))
    return 0 if summary["best"] is not None else 1


def _trial_line(search: Any) -> str:
    """'search s1: 4/20 trials done; trial 3 pruned after 2 epochs (41.7%)' for the trial that just ended."""
    from .runs.search import trial_rows

    ended = [r for r in trial_rows(search.study) if r.ended is not None]
    last = max(ended, key=lambda r: r.ended) if ended else None
    what = "" if last is None else (f"; trial {last.number} {last.why or last.state} after {last.epochs} epochs"
                                    + ("" if last.value is None else f" ({100 * last.value:.1f}%)"))
    return f"search {search.spec.name}: {search.counted()}/{search.spec.trials} trials done{what}"


def cmd_confirm(args: argparse.Namespace) -> int:
    from .compare.confirm import format_verdict, confirm_verdict, plan_confirmation, queue_confirmation

    seeds = int(args.seeds) if args.seeds.strip().isdigit() else parse_seeds(args.seeds)
    plan = plan_confirmation(args.search, top=args.top, seeds=seeds)
    records = _run_and_wait(lambda manager: queue_confirmation(manager, plan), args.device)
    verdict = confirm_verdict(plan, records, _store(), alpha=args.alpha)
    print(json_text(verdict) if args.json else format_verdict(verdict))
    return 0 if verdict["decided"] and not verdict["not_finished"] else 1


def cmd_resume(args: argparse.Namespace) -> int:
    [record] = _run_and_wait(lambda manager: [manager.resume(args.run_id)], args.device)
    return _report_run(record, args.json)


def cmd_restart(args: argparse.Namespace) -> int:
    [record] = _run_and_wait(lambda manager: [manager.restart(args.run_id)], args.device)
    return _report_run(record, args.json)


def _report_run(record: Any, as_json: bool) -> int:
    if as_json:
        print(json_text(run_summary(record)))
    else:
        _print_run(record)
    return 0 if record.status == "finished" else 1


def _train_and_wait(jobs: list[tuple[str, RunConfig, tuple[str, ...]]], device: str | None) -> list:
    """Queue each (name, config, tags) in a JobManager (all at once: seed repeats train as a
    group), show progress on stderr, return finished records."""
    return _run_and_wait(lambda manager: manager.submit_many([(c, n, t) for n, c, t in jobs]), device)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that `train`/`ablate` end their runs as on Ctrl-C."""


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While inside: SIGTERM raises Terminated in the main thread (elsewhere: nothing changes)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


CANCEL_WAIT_S = 30.0  # a stopped CLI waits this long for its runs to stop by themselves


def _run_and_wait(queue: Callable[[Any], list[str]], device: str | None) -> list:
    """Queue runs with `queue(manager) -> ids`, show progress on stderr until all end, return
    their records (with an end the store could not take yet, `JobManager.record`). Ctrl-C or
    SIGTERM cancels the runs (resumable) before the exception goes on."""
    from .runs.jobs import JobManager

    with _sigterm_raises():
        manager = JobManager(device=device)
        ids = queue(manager)
        try:
            _follow(manager, ids)
        except KeyboardInterrupt:
            _cancel_runs(manager, ids)
            raise
        finally:
            manager.shutdown()
    records = [manager.record(run_id) for run_id in ids]
    unsaved = manager.unsaved_ends()
    for record in records:
        if record.status != "finished" and record.error:
            print(f"run {record.id} {record.status}: {record.error}", file=sys.stderr)
        if record.id in unsaved:
            print(f"run {record.id}: the run store could not record this end yet; it is kept beside the run's "
                  f"files and recorded by the next `runs` or dashboard view", file=sys.stderr)
    return records


def _cancel_runs(manager: Any, ids: list[str]) -> None:
    """End `ids` as 'cancelled' (resumable from their checkpoints): ask each to stop, wait up
    to CANCEL_WAIT_S s, and give the runs still going (loading data) their end at once."""
    for run_id in ids:
        with contextlib.suppress(EngineError):
            manager.cancel(run_id)
    manager.wait(ids, timeout=CANCEL_WAIT_S)
    still = set(manager.active())
    for run_id in ids:
        if run_id in still:
            manager.end_now(run_id, "cancelled", "the command was stopped")


def _follow(manager: Any, ids: list[str]) -> None:
    """Print a status line on stderr (every second on a terminal, else every 5 s) until every
    run has ended here: its work over, whether the store has taken its end or not."""
    tty = sys.stderr.isatty()
    while True:
        running = set(manager.active())
        active = [run_id for run_id in ids if run_id in running]
        parts = [f"{len(ids) - len(active)}/{len(ids)} runs done"]
        for run_id in active:
            progress = manager.progress(run_id)
            if progress is not None:
                parts.append(progress.describe())
        line = " | ".join(parts)
        print(("\r" + line[:160].ljust(160)) if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)
        if not active:
            break
        manager.wait(active, timeout=1.0 if tty else 5.0)  # back at once when they end
    if tty:
        print(file=sys.stderr)


def run_summary(record: Any) -> dict[str, Any]:
    """The stable JSON form of a run: ids, status and headline metrics."""
    metrics = record.metrics or {}
    val, test = metrics.get("validation") or {}, metrics.get("test") or {}
    return {
        "run_id": record.id,
        "name": record.name,
        "status": record.status,
        "error": record.error,
        "warning": getattr(record, "warning", None),
        "val_accuracy": val.get("accuracy"),
        "val_balanced_accuracy": val.get("balanced_accuracy"),
        **{key: (metrics.get(split) or {}).get("accuracy") for split, key in CROSS_VALIDATION_KEYS.items()},
        "test_accuracy": test.get("accuracy"),
        "test_balanced_accuracy": test.get("balanced_accuracy"),
        "test_macro_f1": test.get("macro_f1"),
        "epochs": len(record.history or []),
        "device": record.device,
    }


def format_ablation_table(rows: list[dict[str, Any]]) -> str:
    def pct(x: float | None) -> str:
        return "   -  " if x is None else f"{100 * x:5.1f}%"

    lines = [f"{'configuration':<28} {'status':<9} {'val':>6} {'study val':>9} {'test':>6} {'test bal':>8} {'study test':>10}"]
    for r in rows:
        lines.append(
            f"{r['row']:<28} {r['status']:<9} {pct(r['val_accuracy'])} {pct(r['study_val_accuracy']):>9} "
            f"{pct(r['test_accuracy'])} {pct(r['test_balanced_accuracy']):>8} {pct(r['study_test_accuracy']):>10}"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------- runs


def _store() -> Any:
    from .runs.store import RunStore

    return RunStore()


def cmd_runs(args: argparse.Namespace) -> int:
    if args.rebuild:
        from .runs.store import rebuild_store

        report = rebuild_store()
        if report.moved_to is not None:
            print(f"the old run store was kept as {report.moved_to}", file=sys.stderr)
        print(f"rebuilt the run store: {len(report.recovered)} run(s) recovered", file=sys.stderr)
        for folder, reason in report.skipped:
            print(f"  not recovered: {folder}: {reason}", file=sys.stderr)
    store = _store()
    store.mark_interrupted()  # runs whose process was killed show as interrupted (resumable)
    records = store.list_runs(status=args.status, tag=args.tag)
    if args.json:
        print(json_text([run_summary(r) | {"tags": list(r.tags), "created": r.created, "bytes": store.run_bytes(r.id)}
                         for r in records]))
        return 0
    missing_view = False
    for r in records:
        s = run_summary(r)
        val = "-" if s["val_accuracy"] is None else f"{100 * s['val_accuracy']:.1f}%"
        shift = "-" if s["val_shift_accuracy"] is None else f"{100 * s['val_shift_accuracy']:.1f}%"
        source = "-" if s["val_source_accuracy"] is None else f"{100 * s['val_source_accuracy']:.1f}%"
        program = _program_cell(r, s)
        missing_view |= program == "n/a"
        test = "-" if s["test_accuracy"] is None else f"{100 * s['test_accuracy']:.1f}%"
        flag = "  (did not learn)" if r.warning else ""
        size = format_bytes(store.run_bytes(r.id))
        print(f"{r.id}  {r.status:<11} val {val:>6}  cross-val {shift:>6}  source {source:>6}  program {program:>6}  "
              f"test {test:>6}  {size:>8}  {r.name}{flag}")
    print(_space_line(store))
    if missing_view:
        from .data.dataset import PROGRAM_VIEW_MISSING

        print(f"program n/a: cross-val program {PROGRAM_VIEW_MISSING}; the protocol chooses on cross-val source there")
    return 0


def _space_line(store: Any) -> str:
    """'store: 45.2 MB on disk (runs.sqlite + run folders); 3.1 GB free on its disk'."""
    return (f"store: {format_bytes(store.total_bytes())} on disk ({store.db_path.name} + run folders); "
            f"{format_bytes(free_bytes(store.runs_dir))} free on its disk")


def _program_cell(record: Any, summary: dict[str, Any]) -> str:
    """The `runs` cell of the program view: a percentage, "n/a" for a run evaluated on the
    cross-collection views but without the program view (`lacks_program_view`), "-" otherwise."""
    if summary["val_program_accuracy"] is not None:
        return f"{100 * summary['val_program_accuracy']:.1f}%"
    return "n/a" if lacks_program_view(record.metrics or {}) else "-"


def cmd_show(args: argparse.Namespace) -> int:
    store = _store()
    store.mark_interrupted()
    record = store.get(args.run_id)
    if args.json:
        print(json_text(run_summary(record) | {"config": record.config.to_dict(), "metrics": record.metrics,
                                                "history": record.history, "tags": list(record.tags),
                                                "training_seconds": record.training_seconds,
                                                "prepare_seconds": record.prepare_seconds}))
    else:
        _print_run(record)
    return 0


def _print_run(record: Any) -> None:
    s = run_summary(record)
    print(f"run {s['run_id']} ({s['name']}): {s['status']} after {s['epochs']} epochs on {s['device']}")
    spent = getattr(record, "time_spent", "")
    if spent:  # training apart from preparing the features (issue #30)
        print(f"  time: {spent}")
    if s["error"]:
        print(f"  error: {s['error']}")
    if s["warning"]:
        print(f"  warning: {s['warning']}")
    metrics = record.metrics or {}
    for split in EVAL_SPLITS:
        m = metrics.get(split)
        if split == "validation_program" and lacks_program_view(metrics):
            from .data.dataset import PROGRAM_VIEW_MISSING

            print(f"  {split:<18} n/a: {PROGRAM_VIEW_MISSING}")
        if m and not m.get("n"):
            print(f"  {split:<18} no clips (n=0): no accuracy")
        elif m:
            print(f"  {split:<18} accuracy {100 * m['accuracy']:.1f}%  balanced {100 * m['balanced_accuracy']:.1f}%  "
                  f"macro-F1 {m['macro_f1']:.3f}  (n={m['n']})")
    if record.status == "finished":  # issue #24: calibration and the out-of-distribution check
        from .learn.trust import trust_lines

        for line in trust_lines(metrics):
            print(f"  {line}")


def _run_ids(text: str) -> list[str]:
    ids = [part.strip() for part in text.split(",") if part.strip()]
    if not ids:
        raise EngineError(f"no run id in {text!r}; give a run id or comma-separated run ids")
    return ids


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import stats, verdicts

    store = _store()
    runs_a = [store.get(i) for i in _run_ids(args.a)]
    runs_b = [store.get(i) for i in _run_ids(args.b)]
    result = stats.compare_run_groups(runs_a, runs_b, lambda r: store.load_predictions(r.id),
                                      split=args.split, alpha=args.alpha)
    if args.json:
        print(json_text(result))
        return 0
    print(f"A = {', '.join(result['runs_a'])}; B = {', '.join(result['runs_b'])}")
    print(verdicts.verdict(result))
    for note in verdicts.caveats(result):
        print(note)
    print(verdicts.method_why(result))
    if args.split == "test":
        print(verdicts.TEST_SPLIT_NOTE)
    return 0


def cmd_rename(args: argparse.Namespace) -> int:
    _store().rename(args.run_id, args.name)
    return 0


def cmd_tag(args: argparse.Namespace) -> int:
    _store().set_tags(args.run_id, [t for t in args.tags.split(",") if t])
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    store = _store()
    freed = store.delete(args.run_id)
    print(f"deleted run {args.run_id}: {format_bytes(freed)} freed; {format_bytes(free_bytes(store.runs_dir))} "
          f"free on the store's disk", file=sys.stderr)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .predict.predictor import Predictor

    store = _store()
    if args.ensemble:
        predictors = _ensembles(store, _run_ids(args.run))
    else:
        predictors = {run_id: Predictor.from_store(store, run_id) for run_id in _run_ids(args.run)}
    results = [{"run_id": run_id} | r for run_id, predictor in predictors.items()
               for r in predictor.predict_files(args.files)]
    for run_id, predictor in predictors.items():  # issue #24: how the probabilities were made (JSON: per file)
        print(f"run {run_id}: probabilities {predictor.calibration}", file=sys.stderr if args.json else sys.stdout)
    for r in results:  # the same warnings as the Predict page, also when stdout is JSON
        for warning in r.get("warnings", []):
            print(f"warning: {r['file']}: {warning}", file=sys.stderr)
        if "error" in r and args.json:
            print(f"error: {r['file']}: {r['error']}", file=sys.stderr)
    if args.json:
        print(json_text(results))
    else:
        for r in results:
            where = f"{r['file']} [{r['run_id']}]" if len(predictors) > 1 else r["file"]
            if "error" in r:
                print(f"{where}: error: {r['error']}")
            else:
                top = sorted(r["probabilities"].items(), key=lambda kv: -kv[1])[:3]
                print(f"{where}: {r['label']}  (" + ", ".join(f"{k} {v:.2f}" for k, v in top) + ")"
                      + ("  [unlike the training data]" if r["ood"]["unlike_training"] else "")
                      + (f"  [{r['ensemble']['agree']} of {len(r['ensemble']['members'])} seeds agree]"
                         if "ensemble" in r else ""))
    return 0 if all("error" not in r for r in results) else 1


def _ensembles(store: Any, run_ids: list[str]) -> dict[str, Any]:
    """Run id -> the deep ensemble of its seed group (a run with no finished sibling predicts alone,
    said on stderr); a group named twice is loaded once."""
    from .predict.ensemble import EnsemblePredictor, seed_group
    from .predict.predictor import Predictor

    out: dict[str, Any] = {}
    seen: set[str] = set()
    for run_id in run_ids:
        group = seed_group(store, run_id)
        if seen & set(group):
            continue
        seen.update(group)
        if len(group) == 1:
            print(f"run {run_id}: no other finished seed of its configuration; predicting with it alone", file=sys.stderr)
            out[run_id] = Predictor.from_store(store, run_id)
        else:
            out[run_id] = EnsemblePredictor.from_store(store, group)
    return out


def _predictions_of(store: Any, ids: list[str]) -> list[dict]:
    return [store.load_predictions(run_id) for run_id in ids]


def cmd_flips(args: argparse.Namespace) -> int:
    from .compare.agreement import flips

    store = _store()
    ids_a, ids_b = _run_ids(args.a), _run_ids(args.b)
    out = flips(_predictions_of(store, ids_a), _predictions_of(store, ids_b), split=args.split)
    out = {"a": ids_a, "b": ids_b} | out
    if args.json:
        print(json_text(out))
        return 0
    c = out["counts"]
    print(f"{out['n']} {args.split} clips: {c['fixed']} fixed, {c['broken']} broken, "
          f"{c['still_wrong']} changed but still wrong, {c['same']} unchanged")
    for kind in ("fixed", "broken", "still_wrong"):
        for e in out[kind][: args.limit]:
            print(f"  {kind:<11} {e['file']}  true {e['true_label']}: {e['label_a']} -> {e['label_b']}"
                  f"  (change {e['change']:.2f})")
    return 0


def cmd_agreement(args: argparse.Namespace) -> int:
    from .compare.agreement import agreement_matrix

    store = _store()
    ids = _run_ids(args.runs)
    out = agreement_matrix({run_id: store.load_predictions(run_id) for run_id in ids}, split=args.split)
    if args.json:
        print(json_text(out))
        return 0
    print(f"agreement on {out['n']} {args.split} clips (share of equal labels / Cohen's kappa)")
    for i, a in enumerate(ids):
        cells = [f"{out['agreement'][i][j]:.0%}/" + ("-" if out["kappa"][i][j] is None else f"{out['kappa'][i][j]:.2f}")
                 for j in range(len(ids))]
        print(f"  {a:<24} " + "  ".join(f"{c:>10}" for c in cells))
    return 0


def json_text(obj: Any) -> str:
    """Strict JSON (no NaN or Infinity, which strict parsers reject): non-finite floats become null."""
    return json.dumps(_finite(obj), allow_nan=False, default=str)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def cmd_export(args: argparse.Namespace) -> int:
    records = _store().list_runs()
    from .runs.store import csv_cell

    rows = [{k: csv_cell(v) for k, v in (run_summary(r) | {"tags": ",".join(r.tags)} | r.config.flat()).items()}
            for r in records]
    fields = list(rows[0]) if rows else list(run_summary.__annotations__)
    out = open(args.out, "w", newline="") if args.out else sys.stdout
    try:
        writer = csv.DictWriter(out, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    finally:
        if args.out:
            out.close()
    return 0


def cmd_export_model(args: argparse.Namespace) -> int:
    """Write the run's bundle and/or ONNX file (issue #27); every file is built before any is written."""
    if not (args.bundle or args.onnx):
        print("error: say what to write: --bundle OUT.zip and/or --onnx OUT.onnx", file=sys.stderr)
        return 2
    from .runs import export

    store = _store()
    files = []
    if args.bundle:
        files.append((args.bundle, export.model_bundle(store, args.run_id)))
    if args.onnx:
        from .runs.onnx_export import model_onnx

        started = time.perf_counter()
        files.append((args.onnx, model_onnx(store, args.run_id)))
        print(f"exported to ONNX in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    for path, data in files:
        try:
            Path(path).expanduser().write_bytes(data)
        except OSError as exc:
            print(f"error: cannot write {path}: {exc}", file=sys.stderr)
            return 1
        print(f"wrote {path} ({format_bytes(len(data))})")
    return 0


def _progress_bar(desc: str) -> Callable[[int, int, str], None]:
    """A progress(done, total, message) callback drawing a tqdm bar on stderr."""
    from tqdm import tqdm

    state: dict[str, Any] = {}

    def update(done: int, total: int, message: str = "") -> None:
        bar = state.get("bar")
        if bar is None or bar.total != total:
            if bar is not None:
                bar.close()
            bar = state["bar"] = tqdm(total=total, desc=desc, file=sys.stderr, leave=False)
        bar.n = done
        bar.set_postfix_str(message[:40], refresh=True)
        if done >= total:
            bar.close()
            state.pop("bar")

    return update
