"""Configurations: one frozen dataclass per component, each round-tripping to JSON.

A `RunConfig` is everything that decides a run's result. Its `digest()` names the cache
entries and is stored with the run; `FeatureConfig.digest()` names the feature cache.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field, fields, replace
from collections.abc import Mapping
from typing import Any, Literal

from .errors import ConfigError
from .labels import CLASS_NAMES, MIN_CLASSES

Representation = Literal["spectral", "waveform", "logmel", "pcen"]
Arch = Literal["study", "study_2plus1", "sequence", "waveform", "linear"]
Optimizer = Literal["adam", "sgd", "adadelta"]
Pooling = Literal["last", "mean", "max", "stats"]
Select = Literal["best", "last"]
Precision = Literal["float32", "bfloat16"]
Inputs = Literal["librosa_0.11", "librosa_0.7"]
INPUTS: tuple[str, ...] = ("librosa_0.11", "librosa_0.7")
AUGMENTATIONS = ("gain", "eq", "speed", "noise")  # training audio augmentations (engine.data.augment says what each does)

# Fields added after the first release: left out of digests while at their default, so that
# the digests made before they existed (feature caches, seed groups of stored runs) stay valid.
_LATER_DEFAULTS: dict[str, dict[str, Any]] = {
    "FeatureConfig": {"inputs": "librosa_0.11", "clip_norm": False},
    "TrainConfig": {"augment": "", "augment_views": 4, "augment_seed": 0, "time_mask": 0, "freq_mask": 0,
                    "mixup": 0.0, "outlier_exposure": 0.0},
    "RunConfig": {"classes": ()},
}


def canonical_dict(obj: Any) -> dict[str, Any]:
    """dataclasses.asdict(obj) without the later fields that hold their default (see _LATER_DEFAULTS):
    what every digest of a configuration is made from."""

    def strip(value: Any) -> Any:
        if not dataclasses.is_dataclass(value):
            return value
        later = _LATER_DEFAULTS.get(type(value).__name__, {})
        return {f.name: strip(getattr(value, f.name)) for f in fields(value)
                if not (f.name in later and getattr(value, f.name) == later[f.name])}

    return json.loads(json.dumps(strip(obj)))


_SECTIONS = {"FeatureConfig": "features", "ModelConfig": "model", "TrainConfig": "train"}


@functools.cache
def _hints(klass: type) -> dict[str, Any]:
    return typing.get_type_hints(klass)


def _check_types(obj: Any) -> None:
    """Check every field of the frozen dataclass `obj` against its annotation (int, float,
    bool, str, Literal, X | None); ConfigError naming the field ("train.batch_size") otherwise.
    Whole-valued floats for int fields (JSON's 100.0) become ints; ints for float fields
    become floats; floats must be finite."""
    section = _SECTIONS.get(type(obj).__name__, type(obj).__name__)
    for name, hint in _hints(type(obj)).items():
        value = getattr(obj, name)
        allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else (hint,)
        if value is None and type(None) in allowed:
            continue
        kinds = [a for a in allowed if a is not type(None)]
        checked, problem = value, None
        for kind in kinds:
            checked, problem = _coerce(value, kind)
            if problem is None:
                break
        if problem is not None:
            optional = " or null" if type(None) in allowed else ""
            raise ConfigError(f"{section}.{name} must be {problem}{optional}, not {value!r}")
        if checked is not value:
            object.__setattr__(obj, name, checked)


def _coerce(value: Any, kind: Any) -> tuple[Any, str | None]:
    """(value converted to `kind`, None) or (value, what was expected)."""
    if typing.get_origin(kind) is Literal:
        options = typing.get_args(kind)
        return (value, None) if value in options and isinstance(value, str) else (
            value, "one of " + ", ".join(repr(o) for o in options))
    if kind is bool:
        return (value, None) if isinstance(value, bool) else (value, "true or false")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value, None
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value), None
        return value, "a whole number"
    if kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value), None
        return value, "a finite number"
    if kind is str:
        return (value, None) if isinstance(value, str) else (value, "text")
    return value, None


def parse_augment(text: str) -> tuple[str, ...]:
    """'eq, speed' -> ('eq', 'speed') in AUGMENTATIONS order; '' -> (). ConfigError names an unknown one."""
    names = [part.strip().lower() for part in str(text).split(",") if part.strip()]
    unknown = [name for name in names if name not in AUGMENTATIONS]
    if unknown:
        raise ConfigError(f"unknown augmentation {unknown[0]!r}; choose from {', '.join(AUGMENTATIONS)}")
    return tuple(name for name in AUGMENTATIONS if name in names)


LOGMEL_BANDS = 128  # mel bands of representation="logmel" and "pcen" (librosa's default n_mels)


def _digest(obj: Any) -> str:
    text = json.dumps(canonical_dict(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class FeatureConfig:
    """How a 3-second clip (65,536 samples at 22,050 Hz) becomes a (frames, features) matrix.

    representation="spectral": per STFT frame (n_fft 2048, hop 512 -> 129 frames per clip)
    13 MFCC + 1 spectral centroid (Hz) + 7 spectral-contrast bands (dB) = 21 values, plus 12
    chroma values if `chroma`, and the first-order deltas of all of them if `deltas`.
    representation="waveform": the raw waveform cut into non-overlapping frames of
    `waveform_frame` samples (65,536 / 512 -> 128 frames of 512 values).
    representation="logmel": per STFT frame the 128 slaney mel-band energies in dB
    (librosa.power_to_db(melspectrogram), top_db 80), plus chroma / deltas as for "spectral".
    representation="pcen": the same 128 mel-band energies through per-channel energy
    normalisation instead of the log (librosa.pcen, default parameters; engine.features.pcen),
    which divides out each band's slowly varying level (microphone, room, loudness).
    `frames`: keep only the first N frames (the study used 3), or None for the whole clip.
    `inputs`: which librosa's audio inputs to reproduce. "librosa_0.11" (current): soxr "HQ"
    resampling and STFT frames centred with zero padding. "librosa_0.7": the study's April
    2019 librosa (0.6/0.7): resampy "kaiser_best" resampling and centred frames padded by
    reflection, which changes frames 0-1 (two of the three the study model sees) and the last
    two frames; frames in between differ only by the resampler.
    `clip_norm`: per-clip cepstral mean and variance normalisation (CMVN): every feature is
    centred and scaled by its own mean and std over the clip's kept frames, which removes a
    fixed channel (EQ, microphone, level) from MFCC and log-mel values.
    """

    representation: Representation = "spectral"
    frames: int | None = 3
    sample_rate: int = 22050
    clip_samples: int = 65536
    n_mfcc: int = 13
    n_fft: int = 2048
    hop_length: int = 512
    chroma: bool = False
    deltas: bool = False
    waveform_frame: int = 512
    inputs: Inputs = "librosa_0.11"
    clip_norm: bool = False

    def __post_init__(self) -> None:
        _check_types(self)
        if self.representation not in ("spectral", "waveform", "logmel", "pcen"):
            raise ConfigError("features.representation must be 'spectral', 'waveform', 'logmel' or 'pcen', "
                              f"not {self.representation!r}")
        if self.inputs not in INPUTS:
            raise ConfigError(f"features.inputs must be one of {list(INPUTS)}, not {self.inputs!r}")
        if self.frames is not None and self.frames < 1:
            raise ConfigError(f"features.frames must be at least 1 or None (whole clip), not {self.frames}")
        for name in ("sample_rate", "clip_samples", "n_mfcc", "n_fft", "hop_length", "waveform_frame"):
            if getattr(self, name) < 1:
                raise ConfigError(f"features.{name} must be positive, not {getattr(self, name)}")

    @property
    def feature_dim(self) -> int:
        """Values per frame."""
        if self.representation == "waveform":
            return self.waveform_frame
        base = LOGMEL_BANDS if self.is_mel_bands else self.n_mfcc + 1 + 7
        dim = base + (12 if self.chroma else 0)
        return dim * (2 if self.deltas else 1)

    @property
    def is_mel_bands(self) -> bool:
        """True when the base features are the 128 mel bands themselves ("logmel" or "pcen")."""
        return self.representation in ("logmel", "pcen")

    @property
    def pad_mode(self) -> str:
        """How the centred STFT pads the clip's ends: "constant" (zeros) or "reflect"."""
        return "reflect" if self.inputs == "librosa_0.7" else "constant"

    @property
    def resampler(self) -> str:
        """The resampler of audio not at sample_rate: "soxr_hq" or "kaiser_best" (resampy)."""
        return "kaiser_best" if self.inputs == "librosa_0.7" else "soxr_hq"

    @property
    def total_frames(self) -> int:
        """Frames per clip before `frames` truncation."""
        if self.representation == "waveform":
            return self.clip_samples // self.waveform_frame
        return 1 + self.clip_samples // self.hop_length

    @property
    def num_frames(self) -> int:
        """Frames per clip after truncation: the time axis the model sees."""
        return self.total_frames if self.frames is None else min(self.frames, self.total_frames)

    def digest(self) -> str:
        return _digest(self)


@dataclass(frozen=True)
class ModelConfig:
    """The network. `arch`:
    - "study": the study's model: all frames flattened into ONE time step
      (frames*features inputs), `num_layers` LSTM layers of `hidden_size`, linear head.
    - "study_2plus1": the same plus a second LSTM hidden_size -> `extra_hidden` (the "2+1").
    - "sequence": an LSTM that reads the clip frame by frame, optional bidirectional,
      then `pooling` over time ("last", "mean", "max", or "stats": mean and standard
      deviation concatenated, as x-vector statistics pooling) and a linear head.
    - "waveform": like "sequence", over raw-waveform frames.
    - "linear": no LSTM: each feature's mean and standard deviation over the clip's frames
      (2 x features values), dropout, and one linear layer (multinomial logistic regression on
      clip statistics; hidden_size, num_layers, bidirectional and pooling do not apply).
    """

    arch: Arch = "study"
    hidden_size: int = 500
    num_layers: int = 2
    dropout: float = 0.1
    bidirectional: bool = False
    pooling: Pooling = "last"
    extra_hidden: int = 30

    def __post_init__(self) -> None:
        _check_types(self)
        if self.arch not in ("study", "study_2plus1", "sequence", "waveform", "linear"):
            raise ConfigError(f"model.arch must be study, study_2plus1, sequence, waveform or linear, not {self.arch!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), not {self.dropout}")
        for name in ("hidden_size", "num_layers", "extra_hidden"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be positive, not {getattr(self, name)}")
        if self.pooling not in ("last", "mean", "max", "stats"):
            raise ConfigError(f"model.pooling must be last, mean, max or stats, not {self.pooling!r}")

    def digest(self) -> str:
        return _digest(self)


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation. Learning rate, batch size (clips), epochs (passes over training).

    SGD uses `momentum`; Adadelta `rho` and `eps` (the study: 0.8 and 1e-6).
    `standardize`: scale features by mean/std measured on the training split only.
    `class_weighting`: weight the loss by inverse class frequency of the training split.
    `select`: keep the model of the best validation epoch or the last one.
    `grad_clip`: max gradient norm, or None.
    `precision`: "float32", or "bfloat16" mixed precision (torch autocast: matrix products and
    the activations after them in bfloat16; weights, gradients, optimizer state and the loss
    in float32). Faster where the hardware has bfloat16 units (AVX512-BF16 or AMX CPUs, recent
    GPUs), slower elsewhere, and not bit-identical to float32: docs/PERFORMANCE.md measures
    what it changes.

    Augmentation (docs/PROTOCOL.md; engine.data.augment says what each transform does):
    `augment`: comma-separated audio augmentations from engine.data.augment.AUGMENTATIONS
    ("gain", "eq", "speed", "noise"; "" = none). Each training clip gets `augment_views`
    augmented copies, drawn once from `augment_seed` and cached apart from the clean features;
    every epoch each clip is read as its clean version or one of its copies, at random.
    `time_mask` / `freq_mask`: SpecAugment-style masking on the (standardised) feature frames
    of every training batch: one run of up to N consecutive frames / N consecutive feature
    rows per clip set to 0 (0 = off).
    `mixup`: mixup (Zhang et al., ICLR 2018): each training batch is mixed with a shuffled copy
    of itself, x = lam x_i + (1 - lam) x_j on the (standardised, masked) feature frames, and the
    loss is lam CE(y_i) + (1 - lam) CE(y_j), with one lam ~ Beta(mixup, mixup) per batch
    (0 = off; 0.2 is the usual value). A run with mixup trains alone, never in a seed group.
    `outlier_exposure`: outlier exposure (Hendrycks, Mazeika & Dietterich, ICLR 2019): every
    training batch is joined by as many clips of instruments outside the classes
    (engine.features.outliers), and the loss adds this weight times their cross-entropy to the
    uniform distribution, so the model learns to be unsure of what it was not built for (0 =
    off; 0.5 is the paper's value). Medley-solos-DB's 8 classes only; such runs train alone.
    """

    optimizer: Optimizer = "adam"
    lr: float = 1e-4
    batch_size: int = 100
    epochs: int = 50
    momentum: float = 0.0
    rho: float = 0.8
    eps: float = 1e-6
    weight_decay: float = 0.0
    seed: int = 0
    standardize: bool = False
    class_weighting: bool = False
    select: Select = "last"
    grad_clip: float | None = None
    precision: Precision = "float32"
    augment: str = ""
    augment_views: int = 4
    augment_seed: int = 0
    time_mask: int = 0
    freq_mask: int = 0
    mixup: float = 0.0
    outlier_exposure: float = 0.0

    def __post_init__(self) -> None:
        _check_types(self)
        try:
            object.__setattr__(self, "augment", ",".join(parse_augment(self.augment)))  # canonical order
        except ConfigError as exc:
            raise ConfigError(f"train.augment: {exc}") from None
        if self.augment_views < 1:
            raise ConfigError(f"train.augment_views must be at least 1, not {self.augment_views}")
        if self.time_mask < 0 or self.freq_mask < 0:
            raise ConfigError(f"train.time_mask and train.freq_mask must be 0 (off) or positive, not {self.time_mask}, {self.freq_mask}")
        if self.outlier_exposure < 0:
            raise ConfigError(f"train.outlier_exposure must be 0 (off) or a positive weight, not {self.outlier_exposure}")
        if self.mixup < 0:
            raise ConfigError(f"train.mixup must be 0 (off) or a positive Beta parameter, not {self.mixup}")
        if self.precision not in ("float32", "bfloat16"):
            raise ConfigError(f"train.precision must be float32 or bfloat16, not {self.precision!r}")
        if self.optimizer not in ("adam", "sgd", "adadelta"):
            raise ConfigError(f"train.optimizer must be adam, sgd or adadelta, not {self.optimizer!r}")
        if not self.lr > 0:
            raise ConfigError(f"train.lr must be positive, not {self.lr}")
        if self.batch_size < 1:
            raise ConfigError(f"train.batch_size must be at least 1, not {self.batch_size}")
        if self.epochs < 1:
            raise ConfigError(f"train.epochs must be at least 1, not {self.epochs}")
        if self.select not in ("best", "last"):
            raise ConfigError(f"train.select must be 'best' or 'last', not {self.select!r}")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"train.momentum must be in [0, 1), not {self.momentum}")
        if not 0.0 <= self.rho <= 1.0:
            raise ConfigError(f"train.rho must be in [0, 1], not {self.rho}")
        if not self.eps > 0:
            raise ConfigError(f"train.eps must be positive, not {self.eps}")
        if self.weight_decay < 0:
            raise ConfigError(f"train.weight_decay must be zero or positive, not {self.weight_decay}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ConfigError(f"train.grad_clip must be positive or null, not {self.grad_clip}")

    def digest(self) -> str:
        return _digest(self)


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides a run's result. `data` is the dataset folder (a path string, or
    a CSV file). `classes`: the dataset's class names in class-id order, the model's outputs;
    empty for Medley-solos-DB's eight (engine.core.labels.CLASS_NAMES), which keeps the configs
    and digests of runs made before issue #27. A JobManager fills it in when it queues a run
    (engine.data.dataset.with_dataset_classes); read it through `class_names`."""

    data: str = ""
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        raw = self.classes
        if isinstance(raw, str) or not isinstance(raw, (list, tuple)):
            raise ConfigError(f"classes must be a list of class names, not {raw!r}")
        names = tuple(raw)
        if any(not isinstance(n, str) or not n.strip() for n in names):
            raise ConfigError(f"classes must be non-empty texts, not {list(names)!r}")
        if names and len(names) < MIN_CLASSES:
            raise ConfigError(f"classes needs at least {MIN_CLASSES} class names, not {list(names)!r}")
        if len(set(names)) != len(names):
            raise ConfigError(f"classes names a class twice: {list(names)!r}")
        object.__setattr__(self, "classes", () if names == CLASS_NAMES else names)

    @property
    def class_names(self) -> tuple[str, ...]:
        """The run's class names in class-id order: `classes`, or Medley-solos-DB's eight."""
        return self.classes or CLASS_NAMES

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; `classes` only when set (Medley-solos-DB's configs read as before issue #27)."""
        out = dataclasses.asdict(self)
        if not self.classes:
            del out["classes"]
        else:
            out["classes"] = list(self.classes)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "RunConfig":
        unknown = set(raw) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown configuration keys: {sorted(unknown)}")
        return cls(
            data=str(raw.get("data", "")),
            features=_build(FeatureConfig, raw.get("features", {})),
            model=_build(ModelConfig, raw.get("model", {})),
            train=_build(TrainConfig, raw.get("train", {})),
            classes=raw.get("classes") or (),
        )

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"configuration is not valid JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError("configuration JSON must be an object")
        return cls.from_dict(raw)

    def digest(self) -> str:
        return _digest(self)

    def with_values(self, **dotted: Any) -> "RunConfig":
        """A copy with values changed by dotted name: `with_values(**{"train.lr": 1e-3})`.

        A bare name is looked up in train, model, then features: `with_values(lr=1e-3)`.
        """
        parts: dict[str, dict[str, Any]] = {"features": {}, "model": {}, "train": {}}
        top: dict[str, Any] = {}
        for key, value in dotted.items():
            section, name = split_param(key)
            if section == "":
                top[name] = value
            else:
                parts[section][name] = value
        try:
            return replace(
                self,
                **top,
                features=replace(self.features, **parts["features"]),
                model=replace(self.model, **parts["model"]),
                train=replace(self.train, **parts["train"]),
            )
        except TypeError as exc:
            raise ConfigError(f"unknown configuration parameter in {sorted(dotted)}: {exc}") from exc

    def flat(self) -> dict[str, Any]:
        """All values as {"train.lr": ..., "model.dropout": ..., "data": ...}."""
        out: dict[str, Any] = {"data": self.data}
        for section in ("features", "model", "train"):
            for key, value in dataclasses.asdict(getattr(self, section)).items():
                out[f"{section}.{key}"] = value
        return out


def split_param(key: str) -> tuple[str, str]:
    """'train.lr' -> ('train', 'lr'); a bare 'lr' is found in train, model, then features."""
    if "." in key:
        section, name = key.split(".", 1)
        if section not in ("features", "model", "train"):
            raise ConfigError(f"unknown configuration section {section!r} in {key!r}")
        return section, name
    if key == "data":
        return "", key
    for section, klass in (("train", TrainConfig), ("model", ModelConfig), ("features", FeatureConfig)):
        if key in {f.name for f in fields(klass)}:
            return section, key
    raise ConfigError(f"unknown configuration parameter {key!r}")


def _build(klass: type, raw: dict[str, Any]) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{klass.__name__} must be a JSON object, not {type(raw).__name__}")
    known = {f.name for f in fields(klass)}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"unknown {klass.__name__} keys: {sorted(unknown)}")
    try:
        return klass(**raw)
    except TypeError as exc:
        raise ConfigError(f"bad {klass.__name__}: {exc}") from exc


# ---------------------------------------------------------------- one way to state a configuration

_NONE_WORDS = ("", "none", "null", "all", "whole", "whole clip", "off")  # text for None where a field allows it
_TRUE_WORDS, _FALSE_WORDS = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def config_keys() -> list[str]:
    """Every settable dotted name, in RunConfig.flat() order: "data", "features.representation", ..."""
    return list(RunConfig().flat())


def config_from_values(values: Mapping[str, Any], base: RunConfig | None = None) -> RunConfig:
    """A validated RunConfig: `base` (default RunConfig(), the study's base) with each dotted
    value of `values` set ({"train.lr": 1e-3, "model.dropout": "0.2", "features.frames": "all"}).

    The one function every front end calls (CLI flags, the Train page's widgets, the Compare
    page's ablation builder). Values may be Python values or the text a user typed: text is
    read by the field's type ("1e-3" -> 0.001, "yes" -> True, "all"/"none" -> None where the
    field allows None), and a list of names becomes a comma-separated text field
    (["eq", "gain"] -> "gain,eq"). ConfigError names the key for an unknown key (with the
    closest known one), a wrong type and an out-of-range value. The inverse is
    `config.flat()`: config_from_values(config.flat()) == config."""
    base = base if base is not None else RunConfig()
    known = config_keys()
    typed: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"unknown configuration key {key!r}{_suggestion(str(key), known)}")
        typed[key] = _from_user(key, value)
    return base.with_values(**typed)


def _suggestion(key: str, known: list[str]) -> str:
    """'; did you mean 'train.lr'?' for a close or bare name, else ''."""
    bare = [k for k in known if k.rsplit(".", 1)[-1] == key]
    close = bare or difflib.get_close_matches(key, known, n=1, cutoff=0.6) or difflib.get_close_matches(
        key, [k.rsplit(".", 1)[-1] for k in known], n=1, cutoff=0.75)
    if close and "." not in close[0] and close[0] != "data":  # matched a bare field name: give its dotted name
        close = [k for k in known if k.endswith("." + close[0])]
    return f"; did you mean {close[0]!r}?" if close else ""


def _field_hint(key: str) -> Any:
    """The annotation of a dotted name's field (str for "data")."""
    if key == "data":
        return str
    section, name = key.split(".", 1)
    klass = {"features": FeatureConfig, "model": ModelConfig, "train": TrainConfig}[section]
    return _hints(klass)[name]


def _from_user(key: str, value: Any) -> Any:
    """`value` for the field `key`, text read by the field's type; ConfigError naming `key` when
    text does not read as that type. Non-text values pass unchanged (the dataclass checks them)."""
    if key == "data" and not isinstance(value, str):
        raise ConfigError(f"data must be text (a dataset folder, 'demo' or 'demo:tiny'), not {value!r}")
    hint = _field_hint(key)
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    kinds = [a for a in allowed if a is not type(None)]
    if isinstance(value, (list, tuple)) and kinds == [str]:
        return ",".join(str(v).strip() for v in value)
    if not isinstance(value, str) or kinds == [str] or typing.get_origin(kinds[0]) is Literal:
        return value.strip() if isinstance(value, str) and key != "data" else value
    text = value.strip().lower()
    if type(None) in allowed and text in _NONE_WORDS:
        return None
    kind = kinds[0]
    try:
        if kind is bool:
            if text not in _TRUE_WORDS + _FALSE_WORDS:
                raise ValueError(text)
            return text in _TRUE_WORDS
        number = float(text)
        if kind is int:
            if not number.is_integer():
                raise ValueError(text)
            return int(number)
        return number
    except (ValueError, OverflowError):
        expected = {bool: "true or false", int: "a whole number", float: "a number"}[kind]
        optional = " or none" if type(None) in allowed else ""
        raise ConfigError(f"{key} must be {expected}{optional}, not {value!r}") from None
