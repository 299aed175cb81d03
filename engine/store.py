"""The run store: one SQLite database (WAL) with a row per run, plus one folder per run.

Rows hold what lists and comparisons need (config, status, metrics, per-epoch history);
step losses live in their own table so listing 200+ runs never reads them. Files in
`<runs_dir>/<run_id>/` hold what prediction and resume need:
`model.pt` (state_dict), `meta.json`, `predictions.json`, `checkpoint.pt`.

Safe under concurrent writers: every thread gets its own connection, every write is one
`BEGIN IMMEDIATE` transaction, and SQLite's busy timeout serialises writers across processes.
Files are written to a temporary name and moved into place with `os.replace`.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from . import paths
from .config import RunConfig
from .errors import ConfigError, StoreError
from .labels import CLASS_NAMES
from .processes import process_alive, process_start

STATUSES = ("queued", "running", "finished", "failed", "cancelled", "interrupted", "diverged")
ACTIVE = ("queued", "running")
TERMINAL = ("finished", "failed", "cancelled", "interrupted", "diverged")
BUSY_TIMEOUT_MS = 30_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '[]',
    notes TEXT NOT NULL DEFAULT '',
    config TEXT NOT NULL,
    config_digest TEXT NOT NULL,
    group_key TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    device TEXT,
    pid INTEGER,
    pid_start TEXT,
    metrics TEXT NOT NULL DEFAULT '{}',
    history TEXT NOT NULL DEFAULT '[]',
    best_epoch INTEGER
);
CREATE INDEX IF NOT EXISTS runs_created ON runs(created);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
CREATE INDEX IF NOT EXISTS runs_group ON runs(group_key);
CREATE TABLE IF NOT EXISTS step_losses (
    run_id TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    losses TEXT NOT NULL,
    PRIMARY KEY (run_id, epoch)
);
"""

_LIST_COLUMNS = (
    "id, name, tags, notes, config, config_digest, group_key, status, error, created, "
    "started, finished, device, pid, pid_start, metrics, history, best_epoch"
)


@dataclass
class RunRecord:
    """One run as stored. Timestamps are Unix seconds (float) or None."""

    id: str
    name: str
    tags: list[str]
    notes: str
    config: RunConfig
    config_digest: str
    group_key: str
    status: str
    error: str | None
    created: float
    started: float | None
    finished: float | None
    device: str | None
    pid: int | None
    metrics: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    best_epoch: int | None = None

    @property
    def epochs_done(self) -> int:
        """Number of epochs stored in the history."""
        return len(self.history)

    @property
    def duration(self) -> float | None:
        """Seconds from start to finish (or to now while running), None if never started."""
        if self.started is None:
            return None
        return (self.finished or time.time()) - self.started


def group_key(config: RunConfig) -> str:
    """Digest of the config without `train.seed`: seed repeats of one setup share it."""
    raw = config.to_dict()
    raw["train"].pop("seed", None)
    text = json.dumps(raw, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class RunStore:
    """Runs in `db_path` (SQLite) and `runs_dir` (one folder per run)."""

    def __init__(self, db_path: Path | str | None = None, runs_dir: Path | str | None = None) -> None:
        self.db_path = Path(db_path) if db_path is not None else paths.store_path()
        self.runs_dir = Path(runs_dir) if runs_dir is not None else paths.runs_dir()
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._pid_start = process_start(os.getpid())
        with self._write() as con:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    con.execute(statement)

    # ---- connections -------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection (autocommit mode; transactions are explicit)."""
        con = getattr(self._local, "con", None)
        if con is None:
            try:
                con = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
                con.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                con.execute("PRAGMA journal_mode=WAL")
                con.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open the run store {self.db_path}: {exc}") from exc
            con.row_factory = sqlite3.Row
            self._local.con = con
        return con

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken with BEGIN IMMEDIATE so concurrent writers queue up."""
        con = self._conn()
        try:
            con.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"the run store {self.db_path} is busy or unwritable: {exc}") from exc
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        else:
            con.execute("COMMIT")

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None

    # ---- rows --------------------------------------------------------------------------

    def create_run(
        self,
        config: RunConfig,
        name: str | None = None,
        tags: Iterable[str] = (),
        notes: str = "",
        status: str = "queued",
    ) -> str:
        """Insert a new run owned by this process; returns its id like 'r-20261125-ab12cd'."""
        _check_status(status)
        now = time.time()
        for _ in range(20):
            run_id = f"r-{time.strftime('%Y%m%d', time.localtime(now))}-{secrets.token_hex(3)}"
            row = (
                run_id, name or run_id, json.dumps(_clean_tags(tags)), notes, config.to_json(),
                config.digest(), group_key(config), status, now, os.getpid(), self._pid_start,
            )
            try:
                with self._write() as con:
                    con.execute(
                        "INSERT INTO runs (id, name, tags, notes, config, config_digest, group_key, "
                        "status, created, pid, pid_start) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                        row,
                    )
                return run_id
            except sqlite3.IntegrityError:
                continue
        raise StoreError("could not find a free run id")

    def get(self, run_id: str) -> RunRecord:
        """The run `run_id`; StoreError if there is none."""
        row = self._conn().execute(f"SELECT {_LIST_COLUMNS} FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
            raise StoreError(f"no run '{run_id}' in the store")
        return _record(row)

    def exists(self, run_id: str) -> bool:
        """True when a row `run_id` exists."""
        return self._conn().execute("SELECT 1 FROM runs WHERE id=?", (run_id,)).fetchone() is not None

    def list_runs(
        self, status: str | Sequence[str] | None = None, tag: str | None = None, limit: int | None = None
    ) -> list[RunRecord]:
        """Runs, newest first, optionally only those with a status (or any of several) or tag."""
        where, args = [], []
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            args.extend(statuses)
        if tag is not None:
            where.append("EXISTS (SELECT 1 FROM json_each(runs.tags) WHERE value = ?)")
            args.append(tag)
        sql = f"SELECT {_LIST_COLUMNS} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created DESC, rowid DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        return [_record(row) for row in self._conn().execute(sql, args).fetchall()]

    def status(self, run_id: str) -> str:
        """The run's status alone (cheap enough to poll)."""
        return self._require(self._conn(), run_id, "status")["status"]

    def clear_progress(self, run_id: str) -> None:
        """Forget history, metrics, step losses and files: the run starts over from epoch 1."""
        with self._write() as con:
            self._require(con, run_id)
            con.execute("UPDATE runs SET history='[]', metrics='{}', best_epoch=NULL, started=NULL WHERE id=?",
                        (run_id,))
            con.execute("DELETE FROM step_losses WHERE run_id=?", (run_id,))
        shutil.rmtree(self.runs_dir / run_id, ignore_errors=True)

    def set_status(self, run_id: str, status: str, error: str | None = None, device: str | None = None) -> None:
        """Change the status. 'running' stamps start time and this process as owner;
        a terminal status stamps the finish time; 'queued'/'running' clear the error."""
        _check_status(status)
        now = time.time()
        with self._write() as con:
            self._require(con, run_id)
            if status == "running":
                con.execute(
                    "UPDATE runs SET status=?, error=NULL, started=COALESCE(started, ?), finished=NULL, "
                    "device=COALESCE(?, device), pid=?, pid_start=? WHERE id=?",
                    (status, now, device, os.getpid(), self._pid_start, run_id),
                )
            elif status == "queued":
                con.execute(
                    "UPDATE runs SET status=?, error=NULL, finished=NULL, pid=?, pid_start=? WHERE id=?",
                    (status, os.getpid(), self._pid_start, run_id),
                )
            else:
                con.execute(
                    "UPDATE runs SET status=?, error=?, finished=?, device=COALESCE(?, device) WHERE id=?",
                    (status, error, now, device, run_id),
                )

    def append_epoch(self, run_id: str, record: dict, step_losses: Sequence[float] = ()) -> None:
        """Add one epoch's record (dict with 1-based 'epoch') to the history, with that epoch's
        step losses. An epoch already stored (a resumed run repeating it) is replaced."""
        epoch = int(record["epoch"])
        with self._write() as con:
            row = self._require(con, run_id, "history")
            history = [h for h in json.loads(row["history"]) if int(h.get("epoch", 0)) < epoch]
            history.append(_plain(record))
            con.execute("UPDATE runs SET history=? WHERE id=?", (json.dumps(history), run_id))
            con.execute("DELETE FROM step_losses WHERE run_id=? AND epoch>=?", (run_id, epoch))
            con.execute(
                "INSERT INTO step_losses (run_id, epoch, losses) VALUES (?,?,?)",
                (run_id, epoch, json.dumps([float(v) for v in step_losses])),
            )

    def step_losses(self, run_id: str) -> list[float]:
        """All training-step losses of the run, in order."""
        con = self._conn()
        self._require(con, run_id)
        rows = con.execute("SELECT losses FROM step_losses WHERE run_id=? ORDER BY epoch", (run_id,))
        return [v for (text,) in rows for v in json.loads(text)]

    def rename(self, run_id: str, name: str) -> None:
        """Set the display name (blank -> the id)."""
        self._update(run_id, name=name.strip() or run_id)

    def set_tags(self, run_id: str, tags: Iterable[str]) -> None:
        """Replace the tags (stripped, de-duplicated, order kept)."""
        self._update(run_id, tags=json.dumps(_clean_tags(tags)))

    def set_notes(self, run_id: str, notes: str) -> None:
        """Replace the free-text notes."""
        self._update(run_id, notes=notes)

    def delete(self, run_id: str) -> None:
        """Remove the row, its step losses and its folder."""
        with self._write() as con:
            self._require(con, run_id)
            con.execute("DELETE FROM runs WHERE id=?", (run_id,))
            con.execute("DELETE FROM step_losses WHERE run_id=?", (run_id,))
        shutil.rmtree(self.runs_dir / run_id, ignore_errors=True)

    def mark_interrupted(self, alive: Callable[[int | None, str | None], bool] | None = None) -> list[str]:
        """Runs 'queued' or 'running' whose owner process is gone become 'interrupted'.

        `alive(pid, pid_start)` decides; default `process_alive`. Returns the ids changed."""
        alive = alive or process_alive
        with self._write() as con:
            rows = con.execute("SELECT id, pid, pid_start FROM runs WHERE status IN ('queued','running')").fetchall()
            dead = [r["id"] for r in rows if not alive(r["pid"], r["pid_start"])]
            for run_id in dead:
                con.execute(
                    "UPDATE runs SET status='interrupted', error=?, finished=? WHERE id=?",
                    ("the process running it stopped", time.time(), run_id),
                )
        return dead

    def _update(self, run_id: str, **values: Any) -> None:
        sets = ", ".join(f"{key}=?" for key in values)
        with self._write() as con:
            self._require(con, run_id)
            con.execute(f"UPDATE runs SET {sets} WHERE id=?", (*values.values(), run_id))

    @staticmethod
    def _require(con: sqlite3.Connection, run_id: str, columns: str = "id") -> sqlite3.Row:
        row = con.execute(f"SELECT {columns} FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
            raise StoreError(f"no run '{run_id}' in the store")
        return row

    # ---- files -------------------------------------------------------------------------

    def run_dir(self, run_id: str) -> Path:
        """The run's folder (created on demand)."""
        folder = self.runs_dir / run_id
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def save_checkpoint(self, run_id: str, checkpoint: dict) -> None:
        """Write checkpoint.pt atomically; contents are reduced to tensors and plain types so
        that `torch.load(weights_only=True)` accepts them."""
        self._require(self._conn(), run_id)
        _atomic_torch_save(_plain(checkpoint, keep_tensors=True), self.run_dir(run_id) / "checkpoint.pt")

    def load_checkpoint(self, run_id: str) -> dict | None:
        """The last checkpoint (tensors on CPU), or None when the run has none."""
        self._require(self._conn(), run_id)
        path = self.runs_dir / run_id / "checkpoint.pt"
        if not path.exists():
            return None
        return _torch_load(path)

    def delete_checkpoint(self, run_id: str) -> None:
        """Remove checkpoint.pt (a finished run no longer needs it: it holds optimizer state)."""
        (self.runs_dir / run_id / "checkpoint.pt").unlink(missing_ok=True)

    def has_checkpoint(self, run_id: str) -> bool:
        """True when checkpoint.pt exists for the run."""
        return (self.runs_dir / run_id / "checkpoint.pt").exists()

    def save_result(self, run_id: str, result: Any) -> None:
        """Store a finished TrainResult: files first (model.pt, meta.json, predictions.json),
        then status, metrics, history, best epoch and step losses in one transaction."""
        record = self.get(run_id)
        folder = self.run_dir(run_id)
        if result.state_dict:
            _atomic_torch_save(_plain(dict(result.state_dict), keep_tensors=True), folder / "model.pt")
        meta = {
            "config": record.config.to_dict(),
            "class_names": list(CLASS_NAMES),
            "standardizer": _plain(result.standardizer),
            "best_epoch": result.best_epoch,
        }
        if getattr(result, "group", None):  # trained in a group (engine.batched): {"size", "seeds", "member"}
            meta["trained_in_group"] = _plain(result.group)
        _atomic_write_text(folder / "meta.json", json.dumps(meta))
        _atomic_write_text(folder / "predictions.json", json.dumps(_plain(result.predictions or {})))
        history = _plain(result.history or [])
        losses = [float(v) for v in (result.step_losses or [])]
        with self._write() as con:
            con.execute(
                "UPDATE runs SET status=?, error=?, finished=?, device=COALESCE(?, device), metrics=?, "
                "history=?, best_epoch=? WHERE id=?",
                (result.status, result.error, time.time(), result.device,
                 json.dumps(_plain(result.metrics or {})), json.dumps(history), result.best_epoch, run_id),
            )
            stored = con.execute(
                "SELECT COALESCE(SUM(json_array_length(losses)), 0) FROM step_losses WHERE run_id=?", (run_id,)
            ).fetchone()[0]
            if len(losses) >= stored:
                con.execute("DELETE FROM step_losses WHERE run_id=?", (run_id,))
                con.execute("INSERT INTO step_losses (run_id, epoch, losses) VALUES (?,?,?)",
                            (run_id, 0, json.dumps(losses)))

    def load_meta(self, run_id: str) -> dict:
        """meta.json of a stored result; StoreError when the run has no saved model."""
        return self._read_json(run_id, "meta.json", "has no saved model")

    def load_predictions(self, run_id: str) -> dict:
        """predictions.json: {"validation": {"ids", "y", "probs"}, "test": {...}}."""
        return self._read_json(run_id, "predictions.json", "has no stored predictions")

    def load_state_dict(self, run_id: str) -> dict:
        """model.pt (CPU tensors), loaded with weights_only=True."""
        self._require(self._conn(), run_id)
        path = self.runs_dir / run_id / "model.pt"
        if not path.exists():
            raise StoreError(f"run '{run_id}' has no saved model (status {self.get(run_id).status})")
        return _torch_load(path)

    def _read_json(self, run_id: str, filename: str, missing: str) -> dict:
        self._require(self._conn(), run_id)
        path = self.runs_dir / run_id / filename
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise StoreError(f"run '{run_id}' {missing} (status {self.get(run_id).status})") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise StoreError(f"run '{run_id}': cannot read {filename}: {exc}") from exc


# ---- helpers -----------------------------------------------------------------------------


def _record(row: sqlite3.Row) -> RunRecord:
    try:
        config = RunConfig.from_json(row["config"])
    except ConfigError as exc:
        raise StoreError(f"run '{row['id']}' has a configuration this version cannot read: {exc}") from exc
    return RunRecord(
        id=row["id"], name=row["name"], tags=json.loads(row["tags"]), notes=row["notes"], config=config,
        config_digest=row["config_digest"], group_key=row["group_key"], status=row["status"],
        error=row["error"], created=row["created"], started=row["started"], finished=row["finished"],
        device=row["device"], pid=row["pid"], metrics=json.loads(row["metrics"]),
        history=json.loads(row["history"]), best_epoch=row["best_epoch"],
    )


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise StoreError(f"unknown run status {status!r}; expected one of {', '.join(STATUSES)}")


def _clean_tags(tags: Iterable[str]) -> list[str]:
    if isinstance(tags, str):
        tags = tags.split(",")
    out: list[str] = []
    for tag in tags:
        tag = str(tag).strip()
        if tag and tag not in out:
            out.append(tag)
    return out


def _plain(obj: Any, keep_tensors: bool = False) -> Any:
    """`obj` with numpy values turned into Python ones (and tensors into lists, unless
    `keep_tensors`, then moved to CPU), so it suits json.dumps or weights_only loading."""
    if isinstance(obj, torch.Tensor):
        tensor = obj.detach().cpu()
        return tensor if keep_tensors else tensor.tolist()
    if isinstance(obj, dict):
        return {(k if isinstance(k, (str, int)) else str(k)): _plain(v, keep_tensors) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [_plain(v, keep_tensors) for v in obj]
        return tuple(items) if isinstance(obj, tuple) and keep_tensors else items
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy()) if keep_tensors else obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise StoreError(f"cannot write {path}: {exc}") from exc


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise StoreError(f"cannot read {path.name} of run '{path.parent.name}': {exc}") from exc
