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
import functools
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from ..core import paths
from ..core.config import RunConfig, canonical_dict
from ..core.errors import ConfigError, EngineError, StoreDamaged, StoreError
from ..core.space import atomic_write, disk_full_error, folder_bytes, is_disk_full
from ..core.labels import class_names_of
from ..core.processes import process_alive, process_start
from .eta import time_spent

STATUSES = ("queued", "running", "finished", "failed", "cancelled", "interrupted", "diverged")
ACTIVE = ("queued", "running")
TERMINAL = ("finished", "failed", "cancelled", "interrupted", "diverged")
BUSY_TIMEOUT_MS = 30_000
_HELD_ENDS: dict[tuple[str, str], tuple[str, str | None]] = {}  # (db path, run id) -> (status, error), this process
_HELD_LOCK = threading.Lock()
END_FILE = "end.json"  # a run's end kept beside its files while the database cannot take it
HEARTBEAT_STALE_S = 60.0  # an active run whose owner has not beaten for this long is interrupted
OOD_REFERENCE = "ood_reference.pt"  # run folder file: the OOD check's statistics of the training clips (engine.learn.trust)

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
    best_epoch INTEGER,
    heartbeat REAL,
    warning TEXT,
    prepare_seconds REAL
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
    "started, finished, device, pid, pid_start, metrics, history, best_epoch, warning, prepare_seconds"
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
    warning: str | None = None  # e.g. "did not learn: ..." on a run that finished without learning
    prepare_seconds: float | None = None  # preparing its data (None: stored before this was recorded, issue #30)

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

    @property
    def training_seconds(self) -> float | None:
        """Seconds its epochs took (the last stored epoch's clock: training steps and per-epoch
        validation; preparing the data is not in it), None before the first epoch."""
        seconds = (self.history[-1] or {}).get("seconds") if self.history else None
        return None if seconds is None else float(seconds)

    @property
    def time_spent(self) -> str:
        """'training 5 s, preparing features 44 s' (engine.runs.eta.time_spent)."""
        return time_spent(self.training_seconds, self.prepare_seconds, self.duration)


def group_key(config: RunConfig) -> str:
    """Digest of the config without `train.seed`: seed repeats of one setup share it."""
    raw = canonical_dict(config)
    raw["train"].pop("seed", None)
    text = json.dumps(raw, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


REBUILD_HINT = "run `python -m engine runs --rebuild` (or press *Rebuild the run index* in the dashboard)"


def _is_damage(exc: BaseException | None) -> bool:
    """True for errors that mean a corrupt file (not a busy or unwritable one)."""
    if isinstance(exc, sqlite3.OperationalError):
        return "decode" in str(exc).lower() or "malformed" in str(exc).lower()
    return isinstance(exc, (sqlite3.DatabaseError, UnicodeDecodeError, json.JSONDecodeError)) and not isinstance(
        exc, sqlite3.IntegrityError)


def _guarded(method: Callable) -> Callable:
    """`method` with SQLite's errors turned into StoreError (StoreDamaged for a corrupt file),
    so that no raw sqlite3 traceback reaches a user. IntegrityError passes (create_run retries)."""

    @functools.wraps(method)
    def call(self: "RunStore", *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.IntegrityError:
            raise
        except (sqlite3.DatabaseError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            if is_disk_full(exc):
                raise disk_full_error(self.db_path.parent, f"writing the run store {self.db_path.name}",
                                      exc=exc) from exc
            if _is_damage(exc):
                raise self._damaged(exc) from exc
            raise StoreError(f"the run store {self.db_path} failed: {exc}") from exc

    return call


class RunStore:
    """Runs in `db_path` (SQLite) and `runs_dir` (one folder per run).

    Opening checks the file (`PRAGMA quick_check`): a corrupt file, or an empty or missing one
    while run folders with saved results exist, raises StoreDamaged, whose message says how to
    rebuild the index from the run folders (`rebuild_store`). Nothing is overwritten."""

    def __init__(self, db_path: Path | str | None = None, runs_dir: Path | str | None = None,
                 *, verify: bool = True) -> None:
        self.db_path = Path(db_path) if db_path is not None else paths.store_path()
        self.runs_dir = Path(runs_dir) if runs_dir is not None else paths.runs_dir()
        paths.make_writable_dir(self.db_path.parent)
        paths.make_writable_dir(self.runs_dir)
        self._local = threading.local()
        self._pid_start = process_start(os.getpid())
        if verify:
            fresh = not self.db_path.exists() or self.db_path.stat().st_size == 0
            orphans = len(stored_run_folders(self.runs_dir)) if fresh else 0
            if orphans:
                state = "empty (0 bytes)" if self.db_path.exists() else "missing"
                raise StoreDamaged(
                    f"the run store {self.db_path} is {state}, but {self.runs_dir} holds {orphans} saved "
                    f"run(s); to list them again, {REBUILD_HINT}")
            self.check()
        try:
            with self._write() as con:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        con.execute(statement)
                columns = {row["name"] for row in con.execute("PRAGMA table_info(runs)")}
                for column, kind in (("heartbeat", "REAL"), ("warning", "TEXT"),  # stores made before them
                                     ("prepare_seconds", "REAL")):
                    if column not in columns:
                        con.execute(f"ALTER TABLE runs ADD COLUMN {column} {kind}")
        except sqlite3.DatabaseError as exc:
            if is_disk_full(exc):
                raise disk_full_error(self.db_path.parent, f"opening the run store {self.db_path.name}",
                                      exc=exc) from exc
            if not _is_damage(exc):
                raise StoreError(f"cannot write the run store {self.db_path}: {exc}") from exc
            raise self._damaged(exc) from exc

    def _damaged(self, exc: BaseException) -> StoreDamaged:
        return StoreDamaged(f"the run store {self.db_path} is damaged ({exc}); the run folders in "
                            f"{self.runs_dir} are intact: to rebuild the index from them, {REBUILD_HINT}")

    def check(self) -> None:
        """Raise StoreDamaged when the database file is corrupt (SQLite's quick_check: page
        structure and encoding, without index cross-checks)."""
        try:
            rows = self._conn().execute("PRAGMA quick_check").fetchall()
        except (sqlite3.DatabaseError, StoreError) as exc:
            cause = exc if isinstance(exc, sqlite3.DatabaseError) else exc.__cause__
            self.close()
            if not _is_damage(cause):
                raise
            raise self._damaged(cause) from exc
        if [tuple(r) for r in rows] != [("ok",)]:
            self.close()
            raise self._damaged(RuntimeError("; ".join(str(r[0]) for r in rows[:3])))

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
            if is_disk_full(exc):
                raise disk_full_error(self.db_path.parent, f"writing the run store {self.db_path.name}",
                                      exc=exc) from exc
            raise StoreError(f"the run store {self.db_path} is busy or unwritable: {exc}") from exc
        try:
            yield con
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:  # SQLite may have rolled back itself (a full disk at COMMIT)
                with suppress(sqlite3.Error):
                    con.execute("ROLLBACK")
            raise

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
                config.digest(), group_key(config), status, now, os.getpid(), self._pid_start, now,
            )
            try:
                with self._write() as con:
                    con.execute(
                        "INSERT INTO runs (id, name, tags, notes, config, config_digest, group_key, "
                        "status, created, pid, pid_start, heartbeat) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                        row,
                    )
                return run_id
            except sqlite3.IntegrityError:
                continue
        raise StoreError("could not find a free run id")

    def get(self, run_id: str) -> RunRecord:
        """The run `run_id` (with an end held in memory, `hold_end`); StoreError if there is none."""
        row = self._conn().execute(f"SELECT {_LIST_COLUMNS} FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
            raise StoreError(f"no run '{run_id}' in the store")
        return self._with_held_end(_record(row))

    # ---- ends the database cannot take yet (a full disk): held in this process's memory -----

    def hold_end(self, run_id: str, status: str, error: str | None) -> None:
        """Show `status` + `error` for the run to every reader in this process (get, list_runs,
        status) until the database takes an end for it (`set_status`)."""
        with _HELD_LOCK:
            _HELD_ENDS[(str(self.db_path), run_id)] = (status, error)

    def held_end(self, run_id: str) -> tuple[str, str | None] | None:
        """The end held in memory for the run, or None."""
        with _HELD_LOCK:
            return _HELD_ENDS.get((str(self.db_path), run_id))

    def release_end(self, run_id: str) -> None:
        """Forget the end held in memory for the run (the database holds one now)."""
        with _HELD_LOCK:
            _HELD_ENDS.pop((str(self.db_path), run_id), None)

    def _with_held_end(self, record: RunRecord) -> RunRecord:
        held = self.held_end(record.id) if record.status in ACTIVE else None
        if held is None:
            return record
        record.status, record.error = held
        return record

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
        return [self._with_held_end(_record(row)) for row in self._conn().execute(sql, args).fetchall()]

    def status(self, run_id: str) -> str:
        """The run's status alone (cheap enough to poll), an end held in memory included."""
        stored = self.stored_status(run_id)
        held = self.held_end(run_id) if stored in ACTIVE else None
        return held[0] if held else stored

    def stored_status(self, run_id: str) -> str:
        """The status in the database, whatever this process holds in memory."""
        return self._require(self._conn(), run_id, "status")["status"]

    def clear_progress(self, run_id: str) -> None:
        """Forget history, metrics, step losses and files: the run starts over from epoch 1."""
        with self._write() as con:
            self._require(con, run_id)
            con.execute("UPDATE runs SET history='[]', metrics='{}', best_epoch=NULL, started=NULL, "
                        "prepare_seconds=NULL WHERE id=?", (run_id,))
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
                    "UPDATE runs SET status=?, error=NULL, warning=NULL, started=COALESCE(started, ?), finished=NULL, "
                    "device=COALESCE(?, device), pid=?, pid_start=?, heartbeat=? WHERE id=?",
                    (status, now, device, os.getpid(), self._pid_start, now, run_id),
                )
            elif status == "queued":
                con.execute(
                    "UPDATE runs SET status=?, error=NULL, finished=NULL, pid=?, pid_start=?, heartbeat=? WHERE id=?",
                    (status, os.getpid(), self._pid_start, now, run_id),
                )
            else:
                con.execute(
                    "UPDATE runs SET status=?, error=?, finished=?, device=COALESCE(?, device) WHERE id=?",
                    (status, error, now, device, run_id),
                )
        (self.runs_dir / run_id / END_FILE).unlink(missing_ok=True)  # the row holds the truth again
        self.release_end(run_id)

    def keep_end(self, run_id: str, status: str, error: str | None) -> bool:
        """Write the run's end beside its files (END_FILE, a few hundred bytes) when the
        database cannot take it: if this process stops before it can, `mark_interrupted`
        ends the run with this status and error instead of 'interrupted'. Best effort: False
        when even that cannot be written."""
        try:
            atomic_write(self.run_dir(run_id) / END_FILE,
                         lambda tmp: tmp.write_text(json.dumps({"status": status, "error": error})), "keeping a run's end")
        except (OSError, EngineError):
            return False
        return True

    def kept_end(self, run_id: str) -> tuple[str, str | None] | None:
        """(status, error) from the run's END_FILE, or None."""
        try:
            kept = json.loads((self.runs_dir / run_id / END_FILE).read_text())
            return (kept["status"], kept.get("error")) if kept.get("status") in TERMINAL else None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

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

    def add_prepare_seconds(self, run_id: str, seconds: float) -> None:
        """Add `seconds` spent preparing the run's data (a resumed run prepares again) to its
        prepare_seconds, kept apart from its training time."""
        with self._write() as con:
            self._require(con, run_id)
            con.execute("UPDATE runs SET prepare_seconds=COALESCE(prepare_seconds, 0)+? WHERE id=?",
                        (max(0.0, float(seconds)), run_id))

    def step_losses(self, run_id: str, since_epoch: int = 0) -> list[float]:
        """Training-step losses of the run, in order: all of them, or only those of epochs
        after `since_epoch` (1-based; a live view reads only what is new)."""
        con = self._conn()
        self._require(con, run_id)
        if since_epoch > 0:
            rows = con.execute("SELECT losses FROM step_losses WHERE run_id=? AND epoch>? ORDER BY epoch",
                               (run_id, int(since_epoch)))
        else:
            rows = con.execute("SELECT losses FROM step_losses WHERE run_id=? ORDER BY epoch", (run_id,))
        return [v for (text,) in rows for v in json.loads(text)]

    def signature(self) -> tuple:
        """Changes when a run is added, deleted, renamed, tagged or annotated, or ends (or is
        queued again); not when a queued run starts, nor on a new epoch. One query: what a
        page polls to know whether to redraw its lists."""
        row = self._conn().execute(
            "SELECT COUNT(*), MAX(created), MAX(COALESCE(finished, 0)), GROUP_CONCAT(id || "
            "CASE WHEN status IN ('queued','running') THEN 'active' ELSE status END || name || tags || notes, '|') "
            "FROM runs").fetchone()
        return (*tuple(row)[:3], hashlib.sha1((row[3] or "").encode()).hexdigest())

    def creation_order(self) -> dict[str, int]:
        """run id -> its row number (creation order; stable while the run exists): the index
        behind a run's colour on every page."""
        return {row["id"]: int(row["n"]) for row in self._conn().execute("SELECT id, rowid AS n FROM runs")}

    def epochs_done(self, run_id: str) -> int:
        """Epochs stored in the run's history, without reading the history (cheap to poll)."""
        return int(self._require(self._conn(), run_id, "json_array_length(history) AS n")["n"])

    def rename(self, run_id: str, name: str) -> None:
        """Set the display name (blank -> the id)."""
        self._update(run_id, name=name.strip() or run_id)

    def set_tags(self, run_id: str, tags: Iterable[str]) -> None:
        """Replace the tags (stripped, de-duplicated, order kept)."""
        self._update(run_id, tags=json.dumps(_clean_tags(tags)))

    def set_notes(self, run_id: str, notes: str) -> None:
        """Replace the free-text notes."""
        self._update(run_id, notes=notes)

    def delete(self, run_id: str) -> int:
        """Remove the row, its step losses and its folder; returns the bytes the folder took."""
        with self._write() as con:
            self._require(con, run_id)
            con.execute("DELETE FROM runs WHERE id=?", (run_id,))
            con.execute("DELETE FROM step_losses WHERE run_id=?", (run_id,))
        freed = self.run_bytes(run_id)
        shutil.rmtree(self.runs_dir / run_id, ignore_errors=True)
        return freed

    def run_bytes(self, run_id: str) -> int:
        """Bytes the run's folder takes on disk (model, checkpoint, predictions, metadata)."""
        return folder_bytes(self.runs_dir / run_id)

    def total_bytes(self) -> int:
        """Bytes the whole store takes: the database (with its -wal / -shm) and every run folder."""
        files = [self.db_path, self.db_path.with_name(self.db_path.name + "-wal"),
                 self.db_path.with_name(self.db_path.name + "-shm")]
        return sum(f.stat().st_size for f in files if f.exists()) + folder_bytes(self.runs_dir)

    def heartbeat(self, run_ids: Sequence[str]) -> None:
        """Stamp 'now' on the active runs `run_ids` (their owner calls this every few seconds)."""
        if not run_ids:
            return
        with self._write() as con:
            con.execute(f"UPDATE runs SET heartbeat=? WHERE status IN ('queued','running') AND id IN "
                        f"({','.join('?' * len(run_ids))})", (time.time(), *run_ids))

    def mark_interrupted(self, alive: Callable[[int | None, str | None], bool] | None = None,
                         stale_after: float = HEARTBEAT_STALE_S) -> list[str]:
        """Runs 'queued' or 'running' whose owner is gone become 'interrupted' (resumable).

        Gone: its process no longer runs (`alive(pid, pid_start)`, default `process_alive`,
        so a killed process is seen at once), or it has not stamped a heartbeat for
        `stale_after` seconds (a stopped or hung owner, or one on another machine). Cheap when
        nothing changed: one read, no write. Returns the ids changed."""
        alive = alive or process_alive

        def gone(row: sqlite3.Row, now: float) -> str | None:
            if not alive(row["pid"], row["pid_start"]):
                return f"the process running it (pid {row['pid']}) stopped"
            if row["heartbeat"] is not None and now - row["heartbeat"] > stale_after:
                return f"the process running it (pid {row['pid']}) gave no sign of life for {now - row['heartbeat']:.0f} s"
            return None

        query = "SELECT id, pid, pid_start, heartbeat FROM runs WHERE status IN ('queued','running')"
        now = time.time()
        if not any(gone(r, now) for r in self._conn().execute(query).fetchall()):
            return []
        dead = []
        with self._write() as con:  # again under the write lock: an owner may have moved on meanwhile
            now = time.time()
            for row in con.execute(query).fetchall():
                reason = gone(row, now)
                if reason is not None:  # an end its owner kept beside the files (a full store) wins
                    status, error = self.kept_end(row["id"]) or ("interrupted", reason)
                    con.execute("UPDATE runs SET status=?, error=?, finished=? WHERE id=?",
                                (status, error, now, row["id"]))
                    dead.append(row["id"])
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
        _atomic_torch_save(_plain(checkpoint, keep_tensors=True), self.run_dir(run_id) / "checkpoint.pt",
                           "saving the checkpoint")

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
            _atomic_torch_save(_plain(dict(result.state_dict), keep_tensors=True), folder / "model.pt",
                               "saving the model")
        meta = {
            "config": record.config.to_dict(),
            "class_names": list(class_names_of(record.config)),
            "standardizer": _plain(result.standardizer),
            "best_epoch": result.best_epoch,
            "run": {  # what rebuild_store needs to list the run again if the database is lost
                "name": record.name, "tags": record.tags, "notes": record.notes, "created": record.created,
                "started": record.started, "finished": time.time(), "status": result.status,
                "error": result.error, "warning": getattr(result, "warning", None),
                "device": result.device or record.device, "prepare_seconds": record.prepare_seconds,
                "metrics": _plain(result.metrics or {}), "history": _plain(result.history or []),
            },
        }
        if getattr(result, "group", None):  # trained in a group (engine.learn.batched): {"size", "seeds", "member"}
            meta["trained_in_group"] = _plain(result.group)
        if getattr(result, "ood_reference", None) is not None:  # issue #24: what the OOD score measures against
            # torch.tensor copies: arrays that come back from Ray are read-only, which torch.as_tensor warns about
            _atomic_torch_save({k: torch.tensor(v) for k, v in result.ood_reference.items()}, folder / OOD_REFERENCE,
                               "saving the out-of-distribution reference")
        _atomic_write_text(folder / "predictions.json", json.dumps(_plain(result.predictions or {})),
                           "saving the predictions")
        _atomic_write_text(folder / "meta.json", json.dumps(meta), "saving the run's metadata")  # last: marks it saved
        history = _plain(result.history or [])
        losses = [float(v) for v in (result.step_losses or [])]
        with self._write() as con:
            con.execute(
                "UPDATE runs SET status=?, error=?, warning=?, finished=?, device=COALESCE(?, device), metrics=?, "
                "history=?, best_epoch=? WHERE id=?",
                (result.status, result.error, getattr(result, "warning", None), time.time(), result.device,
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

    def load_ood_reference(self, run_id: str) -> dict[str, np.ndarray] | None:
        """What the run's OOD score measures against (engine.learn.trust.fit_reference: name -> array);
        None for a run stored before it existed."""
        self._require(self._conn(), run_id)
        path = self.runs_dir / run_id / OOD_REFERENCE
        return {k: v.numpy() for k, v in _torch_load(path).items()} if path.exists() else None

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


for _name in ("create_run", "get", "exists", "list_runs", "status", "stored_status", "clear_progress", "set_status",
              "append_epoch", "step_losses", "rename", "set_tags", "set_notes", "delete", "mark_interrupted",
              "heartbeat",
              "save_checkpoint", "load_checkpoint", "save_result", "load_meta", "load_predictions",
              "load_state_dict"):
    setattr(RunStore, _name, _guarded(getattr(RunStore, _name)))


# ---- rebuilding the index from the run folders ----------------------------------------------


@dataclass
class RebuildReport:
    """What `rebuild_store` did: runs recovered (ids), folders skipped (folder, reason), and
    where the damaged database was moved (None when there was no file)."""

    recovered: list[str]
    skipped: list[tuple[str, str]]
    moved_to: Path | None


def stored_run_folders(runs_dir: Path) -> list[Path]:
    """Run folders holding a saved result (meta.json), sorted by name."""
    if not runs_dir.is_dir():
        return []
    return sorted(p for p in runs_dir.iterdir() if p.is_dir() and (p / "meta.json").is_file())


def rebuild_store(db_path: Path | str | None = None, runs_dir: Path | str | None = None) -> RebuildReport:
    """Set the database file aside (renamed `<name>.damaged-<time>`, with its -wal/-shm; never
    overwritten) and build a new index from the run folders: every folder with meta.json
    becomes a run again, with its configuration, name, tags, status, history and metrics
    (runs saved before this was recorded get their metrics recomputed from predictions.json
    and their folder name as name). Step losses are not kept in the folders and are lost.
    Call with no other process using the store."""
    from ..learn.metrics import evaluate

    db = Path(db_path) if db_path is not None else paths.store_path()
    folder_root = Path(runs_dir) if runs_dir is not None else paths.runs_dir()
    moved = _set_aside(db)
    store = RunStore(db, folder_root, verify=False)
    recovered: list[str] = []
    skipped: list[tuple[str, str]] = []
    for folder in stored_run_folders(folder_root):
        try:
            meta = json.loads((folder / "meta.json").read_text())
            config = RunConfig.from_dict(meta["config"])
            run = meta.get("run") or {}
            metrics = run.get("metrics")
            if metrics is None:
                predictions = json.loads((folder / "predictions.json").read_text())
                metrics = {split: evaluate(np.asarray(p["y"]), np.asarray(p["probs"], dtype=np.float64))
                           for split, p in predictions.items() if p.get("y")}
        except (OSError, KeyError, TypeError, ValueError, EngineError) as exc:
            skipped.append((folder.name, f"{type(exc).__name__}: {exc}"))
            continue
        created = float(run.get("created") or (folder / "meta.json").stat().st_mtime)
        status = run.get("status") or ("finished" if (folder / "model.pt").exists() else "failed")
        with store._write() as con:
            con.execute(
                "INSERT OR REPLACE INTO runs (id, name, tags, notes, config, config_digest, group_key, status, "
                "error, created, started, finished, device, metrics, history, best_epoch, warning, prepare_seconds) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (folder.name, run.get("name") or folder.name, json.dumps(_clean_tags(run.get("tags") or [])),
                 run.get("notes") or "", config.to_json(), config.digest(), group_key(config), status,
                 run.get("error"), created, run.get("started"), run.get("finished") or created,
                 run.get("device"), json.dumps(_plain(metrics)), json.dumps(run.get("history") or []),
                 meta.get("best_epoch"), run.get("warning"), run.get("prepare_seconds")),
            )
        recovered.append(folder.name)
    store.close()
    return RebuildReport(recovered, skipped, moved)


def _set_aside(db: Path) -> Path | None:
    """Rename db (and its -wal / -shm files) to `<name>.damaged-<YYYYmmdd-HHMMSS>[-n]`."""
    if not db.exists():
        for extra in (db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            extra.unlink(missing_ok=True)
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = db.with_name(f"{db.name}.damaged-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = db.with_name(f"{db.name}.damaged-{stamp}-{n}")
    os.replace(db, target)
    for suffix in ("-wal", "-shm"):
        extra = db.with_name(db.name + suffix)
        if extra.exists():
            os.replace(extra, target.with_name(target.name + suffix))
    return target


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
        history=json.loads(row["history"]), best_epoch=row["best_epoch"], warning=row["warning"],
        prepare_seconds=row["prepare_seconds"],
    )


CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """`value` safe for a CSV cell that a spreadsheet opens: text starting with = + - @ (or a
    tab / carriage return) gets a leading apostrophe, so it is never run as a formula
    (OWASP "CSV injection"). Numbers and other values pass unchanged."""
    if isinstance(value, str) and value.startswith(CSV_FORMULA_START):
        return "'" + value
    return value


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


def _atomic_write_text(path: Path, text: str, step: str) -> None:
    """Write `text` to `path` whole or not at all (engine.core.space.atomic_write); `step` says
    what for in an error ("saving the predictions")."""
    atomic_write(path, lambda tmp: tmp.write_text(text), step, needed=len(text.encode()))


def _atomic_torch_save(obj: Any, path: Path, step: str) -> None:
    """torch.save `obj` to `path` whole or not at all; a failure names the folder and, for a
    full disk, the space free and the bytes the tensors need."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp), step, needed=tensor_bytes(obj))


def tensor_bytes(obj: Any) -> int:
    """Bytes of the tensor data inside `obj` (dicts, lists and tuples walked)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise StoreError(f"cannot read {path.name} of run '{path.parent.name}': {exc}") from exc
