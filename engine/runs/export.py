"""Export: runs and their per-epoch history as CSV, and a run's model as a self-contained bundle.

CSV (`table_csv`, `history_csv`): every text cell guarded against spreadsheet formulas
(`store.csv_cell`), lists such as tags written as plain comma-separated text ("a,b", the form
`python -m engine tag RUN a,b` takes), missing and non-finite numbers as empty cells.

The history is in long ("tidy") format, one row per run x epoch x metric:
`run_id, name, tags, status, seed, epochs_planned, epoch, metric, value`. Long, not one
column per metric, because runs carry different metrics (the cross-collection validation
only some) and pandas (`pivot`), R and Altair read it as it is; `epochs_planned` beside the
last `epoch` shows a partial (cancelled, diverged) run.

A model bundle (`model_bundle`) is a zip: `config.json` (the RunConfig), `model.pt` (the
selected epoch's state_dict, as stored: plain tensors that `torch.load(weights_only=True)`
reads without running code), `model.json` (class names, feature standardizer, run id,
name, best epoch, metrics) and a README. `load_bundle` turns one back into a `Predictor`.

Class names (issue #27): a bundle carries its run's class names in output order, read from
the run's metadata by `class_names_of` (the one place that falls back to the Medley-solos-DB
names for runs stored before runs had their own). Loading never maps labels silently: a
model.json whose class list does not fit the weights' outputs, or a caller that expects other
classes (`load_bundle(..., class_names=...)`), is a StoreError naming both lists.
"""

from __future__ import annotations

import csv
import io
import json
import math
import pickle
import zipfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

from ..core.config import RunConfig
from ..core.errors import ConfigError, StoreError
from ..core import labels
from ..learn.model import build_model
from ..predict.predictor import Predictor
from .store import OOD_REFERENCE, csv_cell

HISTORY_COLUMNS = ("run_id", "name", "tags", "status", "seed", "epochs_planned", "epoch", "metric", "value")
BUNDLE_FORMAT = 1  # model.json "format": bumped when the bundle's layout changes
# The most the JSON members may hold uncompressed (bytes); model.pt may hold what its
# configuration's weights take (weights_limit), so a zip bomb is refused before it is inflated.
BUNDLE_MEMBER_LIMITS = {"config.json": 1 << 20, "model.json": 16 << 20}
BUNDLE_README = """Medley LSTM Lab model bundle (format {format})

config.json  the run's configuration (engine.core.config.RunConfig.from_dict)
model.pt     the selected epoch's weights: a state_dict of plain tensors;
             torch.load("model.pt", weights_only=True) reads it without running code
model.json   class names (output order), feature standardizer (or null), run id, name,
             best epoch and metrics (with "calibration": the temperature T fitted on
             validation, and "ood": the out-of-distribution method and threshold;
             load_bundle's Predictor uses both: softmax(logits / T))
ood_reference.pt  what the out-of-distribution check measures against (the training
             clips' embeddings, for the k-nearest-neighbour distance; weights_only
             tensors; absent in older bundles)

Load it with the engine:  from engine.runs.export import load_bundle
                          predictor = load_bundle("{name}")
                          predictor.predict_file("clip.wav")
"""


def cell(value: Any) -> Any:
    """One CSV cell: lists/tuples/sets as comma-joined text, None, NaT and non-finite floats empty,
    formula-looking text guarded (`store.csv_cell`); anything else as it is."""
    if value is None or type(value).__name__ == "NaTType":  # pandas' missing time, without importing pandas
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    if isinstance(value, (list, tuple, set, frozenset)):
        return csv_cell(",".join(str(v) for v in value))
    return csv_cell(value)


def table_csv(rows: Iterable[dict[str, Any]], columns: Sequence[str] | None = None) -> bytes:
    """UTF-8 CSV of `rows` (dicts), columns in `columns` order (default: the first row's keys)."""
    rows = list(rows)
    columns = list(columns) if columns is not None else (list(rows[0]) if rows else [])
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: cell(_plain(row.get(c))) for c in columns})
    return out.getvalue().encode()


def _plain(value: Any) -> Any:
    """numpy / pandas scalars as Python values (a NaN float stays a float, so `cell` empties it)."""
    item = getattr(value, "item", None)
    if callable(item) and not isinstance(value, (list, tuple, dict, str, bytes)):
        try:
            return item()
        except (TypeError, ValueError):
            return value
    return value


def history_rows(runs: Iterable[Any]) -> list[dict[str, Any]]:
    """Long format: one dict per run x epoch x metric (HISTORY_COLUMNS), runs in the given
    order, epochs ascending, metrics in the order the history records them. `runs`: store
    RunRecords (id, name, tags, status, config, history)."""
    rows = []
    for run in runs:
        head = {"run_id": run.id, "name": run.name, "tags": list(run.tags), "status": run.status,
                "seed": run.config.train.seed, "epochs_planned": run.config.train.epochs}
        for record in run.history or []:
            for metric, value in record.items():
                if metric != "epoch":
                    rows.append({**head, "epoch": record["epoch"], "metric": metric, "value": value})
    return rows


def history_csv(runs: Iterable[Any]) -> bytes:
    """`history_rows` as CSV bytes (HISTORY_COLUMNS)."""
    return table_csv(history_rows(runs), HISTORY_COLUMNS)


def model_bundle(store: Any, run_id: str) -> bytes:
    """The zip of a stored run's model (see the module docstring); StoreError when the run has
    no saved model. `model.pt` is copied byte for byte from the store."""
    meta = store.load_meta(run_id)
    weights = store.runs_dir / run_id / "model.pt"
    if not weights.is_file():
        raise StoreError(f"run '{run_id}' has no saved model")
    record = store.get(run_id)  # its current name (renames do not rewrite meta.json)
    info = {"format": BUNDLE_FORMAT, "run_id": run_id, "name": record.name,
            "class_names": class_names_of(meta), "standardizer": meta.get("standardizer"),
            "best_epoch": meta.get("best_epoch"), "metrics": record.metrics}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("config.json", json.dumps(meta["config"], indent=2))
        zf.write(weights, "model.pt")
        zf.writestr("model.json", json.dumps(info, indent=2))
        zf.writestr("README.txt", BUNDLE_README.format(format=BUNDLE_FORMAT, name=bundle_name(run_id)))
        if (store.runs_dir / run_id / OOD_REFERENCE).is_file():  # issue #24: the OOD check's training embeddings
            zf.write(store.runs_dir / run_id / OOD_REFERENCE, OOD_REFERENCE)
    return out.getvalue()


def class_names_of(info: Mapping[str, Any], config: RunConfig | None = None) -> list[str]:
    """The class names, in the model's output order, of a run's meta.json or a bundle's
    model.json: its "class_names", else its configuration's classes (`config`, or info's
    "config"; engine.core.labels.class_names_of), which are the Medley-solos-DB names
    (CLASS_NAMES) for a run or bundle stored before runs carried their own. StoreError when
    the list is there but not a list of distinct, non-empty texts."""
    names = info.get("class_names")
    if names is None or names == []:
        return list(labels.class_names_of(config if config is not None else info))
    if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
        raise StoreError(f"a damaged model: its class names are not a list of non-empty texts ({names!r:.200})")
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise StoreError(f"a damaged model: its class names repeat {repeated}")
    return list(names)


def check_class_names(found: Sequence[str], expected: Sequence[str] | None, what: str = "the model") -> None:
    """StoreError unless `found` (the model's class names, output order) equals `expected`
    (what the caller will read its outputs as); `expected` None: nothing to check. Same names in
    another order also fail: output i would be read as the wrong class."""
    if expected is None or list(found) == list(expected):
        return
    missing, extra = [n for n in expected if n not in found], [n for n in found if n not in expected]
    parts = ([f"it lacks {missing}"] if missing else []) + ([f"it has {extra}"] if extra else [])
    why = "; ".join(parts) or "the same names in another order"
    raise StoreError(f"{what} was trained for other classes than expected ({why}): its outputs are "
                     f"{list(found)}, expected {list(expected)}; labels are never mapped silently")


def check_outputs(state: Mapping[str, Any], class_names: Sequence[str], what: str = "the model") -> None:
    """StoreError unless the weights' output layer (`head`, every architecture's last
    Linear: weight (classes, inputs)) has one output per class name."""
    head = state.get("head.weight")
    outputs = int(head.shape[0]) if head is not None and getattr(head, "ndim", 0) == 2 else None
    if outputs is not None and outputs != len(class_names):
        raise StoreError(f"{what} lists {len(class_names)} class names but its weights give {outputs} outputs: "
                         "its class list does not belong to these weights")


def weights_limit(config: RunConfig, num_classes: int) -> int:
    """The most bytes model.pt may hold for this configuration: its float32 weights (counted on
    torch's meta device, nothing allocated) plus 10% and 1 MiB for the file's own structure."""
    with torch.device("meta"):
        model = build_model(config.model, config.features, num_classes=num_classes)
    weights = sum(t.numel() * 4 for t in model.state_dict().values())
    return int(weights * 1.1) + (1 << 20)


def read_member(zf: zipfile.ZipFile, name: str, limit: int | None = None) -> bytes:
    """One bundle member's bytes; StoreError when it is missing or larger, uncompressed, than
    `limit` (default BUNDLE_MEMBER_LIMITS[name]). The size is checked in the archive's
    directory before anything is inflated, and the read stops one byte past the limit in case
    the directory lies, so a zip bomb is never read into memory."""
    limit = BUNDLE_MEMBER_LIMITS[name] if limit is None else limit
    try:
        member = zf.getinfo(name)
    except KeyError:
        raise StoreError(f"not a model bundle: it has no {name}") from None
    if member.file_size > limit:
        raise StoreError(f"refused a model bundle: {name} would be {member.file_size:,} bytes uncompressed, "
                         f"over the {limit:,}-byte limit for it")
    with zf.open(member) as stream:
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise StoreError(f"refused a model bundle: {name} inflates past the {limit:,}-byte limit for it")
    return data


def bundle_name(run_id: str) -> str:
    """The download's file name."""
    return f"medley-model-{run_id}.zip"


def bundle_ood_reference(raw: bytes) -> Any:
    """The OOD check's reference statistics of a bundle (name -> array, read weights_only), or
    None for a bundle made before it existed (or without one)."""
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        if OOD_REFERENCE not in zf.namelist():
            return None
        try:
            stats = torch.load(io.BytesIO(zf.read(OOD_REFERENCE)), map_location="cpu", weights_only=True)
            return {k: v.numpy() for k, v in stats.items()}
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise StoreError(f"a damaged model bundle: {OOD_REFERENCE}: {exc}") from None


def load_bundle(source: str | Path | bytes, class_names: Sequence[str] | None = None) -> Predictor:
    """A Predictor from a bundle (a path or the zip's bytes). The weights are read with
    `torch.load(weights_only=True)`: a bundle never runs code. Every failure is a StoreError
    that names what is wrong (not a zip, a part missing or larger than BUNDLE_MEMBER_LIMITS,
    damaged JSON, weights torch refuses or that do not fit the configuration, a class list
    that does not fit the weights' outputs). `class_names`: the classes the caller will read
    the outputs as (e.g. its dataset's); a bundle made for other classes, or in another
    order, is refused (`check_class_names`) rather than mapped."""
    try:
        raw = source if isinstance(source, bytes) else Path(source).read_bytes()
    except OSError as exc:
        raise StoreError(f"cannot read the model bundle: {exc}") from None
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            config = RunConfig.from_dict(json.loads(read_member(zf, "config.json")))
            info = json.loads(read_member(zf, "model.json"))
            if not isinstance(info, dict):
                raise StoreError("a damaged model bundle: model.json is not an object")
            names = class_names_of(info, config)
            limit = weights_limit(config, len(names))
            state = torch.load(io.BytesIO(read_member(zf, "model.pt", limit)), map_location="cpu", weights_only=True)
    except StoreError:
        raise
    except zipfile.BadZipFile as exc:
        raise StoreError(f"not a model bundle: the file is not a zip archive, or a damaged one ({exc})") from None
    except json.JSONDecodeError as exc:
        raise StoreError(f"a damaged model bundle: its JSON does not parse ({exc})") from None
    except pickle.UnpicklingError as exc:
        raise StoreError(f"a damaged or unsafe model bundle: model.pt holds more than plain tensors ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - anything else a damaged archive raises (zlib, EOF, torch, config)
        raise StoreError(f"a damaged model bundle: {type(exc).__name__}: {exc}") from None
    if int(info.get("format", 0)) > BUNDLE_FORMAT:
        raise StoreError(f"model bundle format {info.get('format')} is newer than this version reads ({BUNDLE_FORMAT})")
    check_outputs(state, names, "the model bundle")
    check_class_names(names, class_names, "the model bundle")
    try:
        return Predictor(config, state, info.get("standardizer"), names,
                         info.get("run_id"), info.get("metrics"), bundle_ood_reference(raw))  # issue #24
    except (KeyError, RuntimeError) as exc:
        raise StoreError(f"the bundle's weights do not match its configuration: {exc}") from None
