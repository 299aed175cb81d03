"""Named configurations: the study's base and ablation, and our recommended default.

`RunConfig()`'s defaults are the study's base configuration (first 3 frames of 21 features
fed as one time step, LSTM 2x500, dropout 0.1, Adam lr 1e-4, batch 100, 50 epochs); the study
presets add the study's own 2019 inputs (librosa 0.6/0.7: reflection-padded STFT frames and
resampy's kaiser_best resampler, `FeatureConfig.inputs`), so that they are its exact models
fed its exact inputs.
"""

from __future__ import annotations

from ..core.config import FeatureConfig, ModelConfig, RunConfig, TrainConfig

STUDY_BASE = RunConfig(features=FeatureConfig(inputs="librosa_0.7"))

# Our default: the whole clip read frame by frame, standardised, best-validation epoch kept,
# without per-clip CMVN (fourth application, below). CMVN was first chosen by docs/PROTOCOL.md (cross-collection validation only,
# never test): in the robustness ablation on demo:default (3 seeds) it raised the
# cross-collection validation from 48.8% +- 8.4 to 65.1% +- 5.5, beyond the seed spread; the
# test accuracy, read afterwards, went from 49.3% +- 9.0 to 44.2% +- 1.2 (docs/GUIDE.md, "Carrying over").
# Second application (demo generator 3, source view, seed-level test with Holm): no option was
# significantly better on the source view, so this preset stayed (test 44.9% +- 2.6).
# Third application (demo generator 4, the program view, same rule): no option was
# significantly better on the program view (- CMVN +9.9 points, Holm p 0.26), so it stayed
# again (test, read afterwards: 49.7% +- 3.3).
# Fourth application (declared before running: recommended vs - CMVN, fresh seeds 3-7, the
# program view only): - CMVN +11.7 points, p 0.007, significantly better, so CMVN is off by
# default (test, read afterwards: 68.7% +- 4.0 against 52.5% +- 3.4). It stays one switch.
RECOMMENDED = RunConfig(
    features=FeatureConfig(frames=None, clip_norm=False),
    model=ModelConfig(arch="sequence", hidden_size=128, num_layers=2, dropout=0.1, pooling="mean"),
    train=TrainConfig(lr=1e-3, batch_size=100, epochs=30, standardize=True, select="best", grad_clip=1.0,
                      outlier_exposure=0.5),  # docs/PROTOCOL.md, ninth application
)

PRESETS: dict[str, RunConfig] = {"study": STUDY_BASE, "recommended": RECOMMENDED}

# Validation accuracy the study reported for each ablation row (FACTS.md); None where it
# only showed a figure. "final" is the batch-50 model evaluated on the TEST split.
STUDY_REPORTED: dict[str, float | None] = {
    "base": 0.78,
    "batch 50": None,
    "batch 20": None,
    "lr 1e-3": 0.75,
    "lr 1e-5": 0.67,
    "dropout 0.05": 0.75,
    "dropout 0.5": 0.70,
    "SGD": 0.52,
    "Adadelta": 0.49,
    "extra LSTM layer (2+1)": 0.79,
}
STUDY_REPORTED_FINAL_TEST = 0.53
STUDY_FINAL_ROW = "batch 50"  # the study's final model: batch 50, lr 1e-4, dropout 0.1, Adam

# Each ablation row: the values it changes from the base configuration.
STUDY_ABLATION_CHANGES: dict[str, dict[str, object]] = {
    "base": {},
    "batch 50": {"train.batch_size": 50},
    "batch 20": {"train.batch_size": 20},
    "lr 1e-3": {"train.lr": 1e-3},
    "lr 1e-5": {"train.lr": 1e-5},
    "dropout 0.05": {"model.dropout": 0.05},
    "dropout 0.5": {"model.dropout": 0.5},
    "SGD": {"train.optimizer": "sgd"},
    "Adadelta": {"train.optimizer": "adadelta", "train.rho": 0.8, "train.eps": 1e-6},
    "extra LSTM layer (2+1)": {"model.arch": "study_2plus1"},
}

# What the study missed: the same base, changed one honest step at a time.
_WHOLE_CLIP_SEQUENCE = {
    "train.standardize": True,
    "features.frames": None,
    "model.arch": "sequence",
    "model.hidden_size": 128,
    "model.pooling": "mean",
    "train.lr": 1e-3,
}
BEYOND_CHANGES: dict[str, dict[str, object]] = {
    "study base": {},
    "+ standardised features": {"train.standardize": True},
    "+ whole clip as a sequence": _WHOLE_CLIP_SEQUENCE,
    "+ class weighting": {**_WHOLE_CLIP_SEQUENCE, "train.class_weighting": True},
    "recommended": {},  # replaced by RECOMMENDED below
}


def study_ablation(base: RunConfig = STUDY_BASE, **overrides: object) -> list[tuple[str, RunConfig]]:
    """The study's ablation as (row name, configuration); `overrides` (dotted names) apply to every row."""
    base = base.with_values(**overrides) if overrides else base
    return [(name, base.with_values(**changes)) for name, changes in STUDY_ABLATION_CHANGES.items()]


def beyond_study(base: RunConfig = STUDY_BASE, **overrides: object) -> list[tuple[str, RunConfig]]:
    """The study's base next to the fixes it proposed or missed, ending with RECOMMENDED."""
    rows = []
    for name, changes in BEYOND_CHANGES.items():
        config = RECOMMENDED if name == "recommended" else base.with_values(**changes)
        config = config.with_values(data=base.data)
        rows.append((name, config.with_values(**overrides) if overrides else config))
    return rows


# The robustness ablation (issue "models that carry over"): each option of FeatureConfig /
# ModelConfig / TrainConfig meant to help a model carry over to another collection, as
# (values that turn it on, values that turn it off). A row flips one option of the base
# (RECOMMENDED): "+ name" turns it on, "- name" off when the base already has it.
ROBUSTNESS_OPTIONS: dict[str, tuple[dict[str, object], dict[str, object]]] = {
    "per-clip CMVN": ({"features.clip_norm": True}, {"features.clip_norm": False}),
    "log-mel frames": ({"features.representation": "logmel"}, {"features.representation": "spectral"}),
    "statistics pooling": ({"model.pooling": "stats"}, {"model.pooling": "mean"}),
    "audio augmentation": ({"train.augment": "gain,eq,speed,noise"}, {"train.augment": ""}),
    "SpecAugment masking": ({"train.time_mask": 20, "train.freq_mask": 4}, {"train.time_mask": 0, "train.freq_mask": 0}),
    "PCEN front end": ({"features.representation": "pcen"}, {"features.representation": "spectral"}),
    "mixup": ({"train.mixup": 0.2}, {"train.mixup": 0.0}),
    "outlier exposure": ({"train.outlier_exposure": 0.5}, {"train.outlier_exposure": 0.0}),
    # No LSTM: logistic regression on each feature's clip mean and spread. A convex problem, so a
    # larger step and more (cheap) epochs than the LSTM's, fixed before any run (docs/PROTOCOL.md).
    "linear on clip statistics": ({"model.arch": "linear", "train.lr": 1e-2, "train.epochs": 100},
                                  {"model.arch": "sequence", "train.lr": 1e-3, "train.epochs": 30}),
}
ROBUSTNESS_SEEDS = (0, 1, 2)


def option_is_on(config: RunConfig, on: dict[str, object]) -> bool:
    """Whether `config` already has every value of `on` (dotted names)."""
    flat = config.flat()
    return all(flat.get(key) == value for key, value in on.items())


def robustness_ablation(base: RunConfig | None = None, **overrides: object) -> list[tuple[str, RunConfig]]:
    """The recommended configuration and one row per ROBUSTNESS_OPTIONS entry flipped, as
    (row name, configuration); `overrides` (dotted names) apply to every row, except where a row's
    own flip sets the same name (the linear row's step and epochs). One run per row:
    seeds are added by `engine.runs.launch.plan_ablation`. `base` defaults to RECOMMENDED (its data is kept)."""
    base = (base or RECOMMENDED).with_values(**overrides) if overrides else (base or RECOMMENDED)
    rows = [("recommended", base)]
    for name, (on, off) in ROBUSTNESS_OPTIONS.items():
        has = option_is_on(base, on)
        rows.append((f"{'-' if has else '+'} {name}", base.with_values(**(off if has else on))))
    return rows


def ablation_row(run_name: str) -> str:
    """The row a robustness run belongs to, from its name: 'robustness: + eq seed 2' -> '+ eq'."""
    name = run_name.split(": ", 1)[1] if run_name.startswith("robustness: ") else run_name
    head, _, tail = name.rpartition(" seed ")
    return head if head and tail.isdigit() else name


ABLATIONS = {"study": study_ablation, "beyond": beyond_study, "robustness": robustness_ablation}
# The configuration each ablation's rows start from (CLI flags change this base).
ABLATION_BASES: dict[str, RunConfig] = {"study": STUDY_BASE, "beyond": STUDY_BASE, "robustness": RECOMMENDED}
ABLATION_SEEDS: dict[str, tuple[int, ...]] = {"study": (0,), "beyond": (0,), "robustness": ROBUSTNESS_SEEDS}
