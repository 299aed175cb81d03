"""Background training: a queue of runs, each trained in its own daemon thread.

`JobManager` owns an in-memory queue; whenever a slot frees (at most `max_concurrent` runs at
once) the next queued run starts in a daemon thread: load features (memoised), `train_run`,
store the result. Queued runs that can train together (seed repeats of a study model:
`engine.learn.batched.companions`) start as one group in one thread and slot (`train_group`), and
with isolation="process" in one worker process; each is still an ordinary run in the store,
with its own progress, cancel and checkpoints. Live progress lives in memory (`progress(run_id)`), updated every training
step without touching the database; the history goes to the store once per epoch, with a
checkpoint so that an interrupted run can be resumed.

Here: the queue (`JobManager`); in engine.runs.worker the training worker processes and a
run's data loader; in engine.runs.liveness the heartbeat and how a run's end is recorded; in
engine.runs.progress the Progress and the hooks that keep it.

No streamlit here: the dashboard keeps one JobManager per server and polls `progress()`.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import threading
import time
from dataclasses import replace
from typing import Any, Callable, Iterable, Sequence

import torch

from ..core.config import RunConfig
from ..core.errors import ConfigError, EngineError
from .budget import check_run_space
from .memo import LruMemo
from .naming import describe
from .store import ACTIVE, RunRecord, RunStore
from ..learn.batched import companions, train_group
from ..learn.train import train_run
from .liveness import EndLedger, _fail_active, _failure_message, _is_oom, _store_result, heartbeat
from .progress import PrepProgress, Progress, _RunHooks, _step_every, _stream, record_preparation  # shared with engine.runs.ray_backend
from ..data.dataset import with_dataset_classes
from .worker import _default_loader, _Worker, cpu_threads, data_key

log = logging.getLogger(__name__)

RESUMABLE_STATUSES = ("interrupted", "cancelled", "failed")
DataLoader = Callable[[RunConfig], dict]
CHECKPOINT_EVERY_S = 10.0  # at most one checkpoint per run this often (first epoch always)


class JobError(EngineError):
    """A job request that cannot be honoured (resume a finished run, delete a running one...)."""


class JobManager:
    """Queue and train runs in the background.

    store: the RunStore (default: the cache's). max_concurrent: runs training at once
    (default 1 on CPU, 4 with CUDA). data_loader(config) -> {"training": FeatureSet, ...}
    (default: dataset + feature cache, memoised). device: "cpu", "cuda", ... (default: cuda
    when available). On construction, runs left queued/running by dead processes become
    "interrupted" (listed in `.interrupted`).
    backend: "local" (runs train on this machine; isolation "thread" or "process" says in
    what) or "ray" (each run is a task on a Ray cluster, `ray_options` an
    engine.runs.ray_backend.RayOptions: address, CPUs and GPU fraction per run; max_concurrent
    defaults to what the cluster holds); default $MEDLEY_BACKEND, else "local". The queue,
    progress, cancel, resume and the store work the same with both.
    """

    def __init__(self, store: RunStore | None = None, max_concurrent: int | None = None,
                 data_loader: DataLoader | None = None, device: str | None = None,
                 checkpoint_every_s: float = CHECKPOINT_EVERY_S, isolation: str = "thread",
                 group_runs: bool = True, backend: str | None = None, ray_options: Any = None) -> None:
        self.store = store or RunStore()
        # backend "local": runs train on this machine, in threads or worker processes (isolation);
        # "ray": each run is a Ray task (engine.runs.ray_backend; ray_options: a RayOptions, default
        # from $MEDLEY_RAY_ADDRESS); default $MEDLEY_BACKEND, else "local".
        from .ray_backend import RayOptions, RayRunner, backend_from_env

        self.backend = backend_from_env(backend)
        self.checkpoint_every_s = checkpoint_every_s
        self.data_cache_size = 2
        self._ray: RayRunner | None = None
        if self.backend == "ray":
            self._ray = RayRunner(self, ray_options or RayOptions.from_env())
        self.ray_options: RayOptions | None = self._ray.options if self._ray else None
        # Train groupable queued runs together (engine.learn.batched): in this process's thread, or as
        # one job of a worker process (isolation="process"); a Ray task trains one run.
        self.group_runs = group_runs and isolation in ("thread", "process") and self._ray is None
        self.device = self._ray.options.device if self._ray else (device or ("cuda" if torch.cuda.is_available() else "cpu"))
        default_slots = self._ray.default_concurrency() if self._ray else (4 if self.device.startswith("cuda") else 1)
        self.max_concurrent = max(1, int(max_concurrent or default_slots))
        if not self.device.startswith("cuda"):
            torch.set_num_threads(cpu_threads())  # process-wide: leave a core to everything else
        if isolation not in ("thread", "process"):
            raise ConfigError(f"isolation must be 'thread' or 'process', not {isolation!r}")
        if isolation == "process" and data_loader is not None:
            raise ConfigError("a custom data_loader needs isolation='thread' (worker processes load data themselves)")
        self.isolation = isolation
        self._workers: list[_Worker] = []  # idle training processes (isolation="process")
        self._data_loader = data_loader
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._queue: collections.deque[str] = collections.deque()
        self._configs: dict[str, RunConfig] = {}
        self._resume: dict[str, dict | None] = {}
        self._threads: dict[str, threading.Thread] = {}
        # every worker thread started and maybe not yet gone: a run leaves _threads at the end of its
        # work, while its thread still frees tensors; shutdown joins these, so that the interpreter
        # never exits under a daemon thread inside torch (that aborts the process: "terminate called")
        self._started: list[threading.Thread] = []
        self._stops: dict[str, threading.Event] = {}
        self._progress: dict[str, Progress] = {}
        self._shutdown = threading.Event()
        self._ends = EndLedger()  # final states the store could not take yet (retried every heartbeat)
        self._data_cache: LruMemo[dict] = LruMemo(self.data_cache_size)  # data_key(config) -> features
        self.interrupted = self.store.mark_interrupted()
        self._heart = threading.Thread(target=heartbeat, args=(self.store, self.active, self._shutdown, self._ends),
                                       name="job-heartbeat", daemon=True)
        self._heart.start()

    # ---- submitting ----------------------------------------------------------------------

    def submit(self, config: RunConfig, name: str | None = None, tags: Iterable[str] = ()) -> str:
        """Queue one run; returns its id. It starts as soon as a slot is free."""
        self._check_open()
        config = with_dataset_classes(config)  # the dataset's class names, stored with the run
        run_id = self.store.create_run(config, name=name, tags=tags)
        self._enqueue(run_id, config, None)
        return run_id

    def submit_many(self, jobs: Iterable[tuple[RunConfig, str | None, Iterable[str]]]) -> list[str]:
        """Queue several (config, name, tags) at once, so that those that can train together
        start as one group; returns their ids in order."""
        self._check_open()
        jobs = [(with_dataset_classes(config), name, tags) for config, name, tags in jobs]  # checked before any is queued
        with self._lock:  # no worker starts before all are queued
            ids = []
            for config, name, tags in jobs:
                run_id = self.store.create_run(config, name=name, tags=tags)
                self._enqueue(run_id, config, None, pump=False)
                ids.append(run_id)
            self._pump()
        return ids

    def submit_grid(self, base: RunConfig, grid: dict[str, Sequence[Any]], name_prefix: str | None = None,
                    tags: Iterable[str] = ()) -> list[str]:
        """Queue one run per combination of `grid` values ({"train.lr": [1e-3, 1e-4], ...});
        every configuration is checked before any is queued."""
        keys = list(grid)
        jobs = []
        for values in itertools.product(*(list(grid[k]) for k in keys)):
            try:
                config = base.with_values(**dict(zip(keys, values)))
            except TypeError as exc:  # an unknown name inside a known section
                raise ConfigError(f"unknown parameter in grid {keys}: {exc}") from exc
            label = ", ".join(describe(k, v) for k, v in zip(keys, values))  # "lr 1e-3, dropout 0.5"
            jobs.append((config, f"{label} of {name_prefix}" if name_prefix else label, tags))
        return self.submit_many(jobs)

    def repeat_seeds(self, config: RunConfig, seeds: Iterable[int], name: str | None = None,
                     tags: Iterable[str] = ()) -> list[str]:
        """Queue `config` once per seed (train.seed), named 'seed 2 of <name>'; the runs share a
        group_key and, for the study models, train as one group."""
        tags = tuple(tags)
        return self.submit_many([(config.with_values(**{"train.seed": int(s)}), f"seed {int(s)} of {name or 'run'}", tags)
                                 for s in seeds])

    def resume(self, run_id: str) -> str:
        """Queue an interrupted, cancelled or failed run again under the same id. With a
        checkpoint it continues from its last saved epoch; without one it starts over."""
        self._check_open()
        record = self.store.get(run_id)
        with self._lock:
            if run_id in self._configs:
                raise JobError(f"run '{run_id}' is already {record.status}")
        if record.status not in RESUMABLE_STATUSES:
            raise JobError(f"run '{run_id}' is {record.status}; only {', '.join(RESUMABLE_STATUSES)} runs can be resumed")
        checkpoint = self.store.load_checkpoint(run_id)
        if checkpoint is None:
            self.store.clear_progress(run_id)
        self.store.set_status(run_id, "queued")
        self._enqueue(run_id, record.config, checkpoint)
        return run_id

    def restart(self, run_id: str) -> str:
        """Queue a new run with the same configuration, name and tags; returns the new id."""
        record = self.store.get(run_id)
        return self.submit(record.config, name=f"{record.name} (again)", tags=record.tags)

    def _enqueue(self, run_id: str, config: RunConfig, resume: dict | None, pump: bool = True) -> None:
        epochs_done = int(resume["epoch"]) if resume else 0
        with self._lock:
            self._configs[run_id], self._resume[run_id] = config, resume
            self._stops[run_id] = threading.Event()
            self._progress[run_id] = Progress(run_id, epoch=epochs_done, epochs=config.train.epochs)
            self._queue.append(run_id)
            if pump:
                self._pump()

    def _check_open(self) -> None:
        if self._shutdown.is_set():
            raise JobError("the job manager has shut down")

    # ---- dispatching ---------------------------------------------------------------------

    def _pump(self) -> None:
        """Start queued runs while slots are free. Call with the lock held."""
        while (self._queue and len(set(self._threads.values())) < self.max_concurrent
               and not self._shutdown.is_set()):
            run_id = self._queue.popleft()
            status = self._status_or_none(run_id)
            if status != "queued":  # cancelled or deleted meanwhile (maybe by another process)
                self._forget(run_id, status or "deleted")
                continue
            group = self._take_companions(run_id)
            if group:
                thread = threading.Thread(target=self._work_group, args=([run_id, *group],),
                                          name=f"train-group-{run_id}", daemon=True)
            else:
                thread = threading.Thread(target=self._work, args=(run_id,), name=f"train-{run_id}", daemon=True)
            for member in (run_id, *group):
                self._threads[member] = thread
            self._started = [t for t in self._started if t.is_alive()] + [thread]
            thread.start()
        self._changed.notify_all()

    def _take_companions(self, run_id: str) -> list[str]:
        """Queued runs (not resuming) that train in one group with `run_id`, taken off the
        queue; [] when grouping is off, `run_id` resumes or nothing groups with it. Lock held."""
        if not self.group_runs or self._resume.get(run_id) is not None:
            return []
        queued = [(r, self._configs[r]) for r in self._queue
                  if self._resume.get(r) is None and self._status_or_none(r) == "queued"]
        group = companions(self._configs[run_id], queued)
        for member in group:
            self._queue.remove(member)
        return group

    def _status_or_none(self, run_id: str) -> str | None:
        try:
            return self.store.status(run_id)
        except EngineError:
            return None

    def _forget(self, run_id: str, final: str) -> None:
        """Drop a run's bookkeeping; its Progress stays, showing the final status."""
        self._configs.pop(run_id, None)
        self._resume.pop(run_id, None)
        self._stops.pop(run_id, None)
        self._threads.pop(run_id, None)
        if run_id in self._progress:
            self._progress[run_id].phase = final

    def _work(self, run_id: str) -> None:
        """One run, in its own thread: never raises; the outcome goes to the store."""
        with self._lock:
            config, resume = self._configs[run_id], self._resume[run_id]
            stop, progress = self._stops[run_id], self._progress[run_id]
        final = "failed"
        try:
            final = self._train(run_id, config, resume, stop, progress)
        except BaseException as exc:  # a worker must record every failure, whatever it is
            self._record_failure([run_id], exc)
        finally:
            self.store.close()  # this thread's connection
            with self._lock:
                self._forget(run_id, final)
                self._pump()

    def _train(self, run_id: str, config: RunConfig, resume: dict | None, stop: threading.Event,
               progress: Progress) -> str:
        """Load data, train, store the result; returns the final status."""
        self.store.set_status(run_id, "running", device=self.device)
        self._set(progress, phase="loading data")
        if self.isolation == "process" and self._ray is None:
            return self._train_in_worker([run_id], [config], resume is not None, [stop], [progress])[run_id]
        with record_preparation(self.store, [run_id]):  # its own time, apart from training's
            data = self._load_data(config, progress)
        if stop.is_set():
            return self._end_stopped(run_id)
        check_run_space(self.store.runs_dir, [config], data)
        if self._ray is not None:  # the data goes to Ray's object store; the run to a Ray task
            return self._ray.train(run_id, config, resume, stop, progress, data, data_key(config))
        self._set(progress, phase="training", message="")
        hooks = _RunHooks(self, run_id, progress, stop, resume, step_every=_step_every(self.device))
        with _stream(self.device):
            result = train_run(config, data, device=self.device, hooks=hooks, resume=resume)
        return _store_result(self.store, run_id, result, self._shutdown)

    def _train_in_worker(self, run_ids: list[str], configs: list[RunConfig], resumed: bool,
                         stops: list[threading.Event], progresses: list[Progress]) -> dict[str, str]:
        """Train one run, or a group (`resumed` False), in a worker process (an idle one, else a
        new one): this thread relays its progress into `progresses` and `stops` to it; the
        worker writes the store itself. Returns each run's final status."""
        with self._lock:
            worker = self._workers.pop() if self._workers else None
        if worker is None or not worker.alive():
            worker = _Worker(self.device, self.store, self.checkpoint_every_s)
        progress_of = dict(zip(run_ids, progresses))
        finals = worker.run(run_ids, configs, resumed, dict(zip(run_ids, stops)), self._shutdown,
                            lambda run_id, values: self._set(progress_of[run_id], **values), self._ended,
                            lambda run_id, error: self._ends.end(self.store, run_id, "failed", error))
        if finals is None:  # the process died (killed, out of memory...): say so, do not reuse it
            worker.close()
            error = f"the training process stopped unexpectedly (exit code {worker.exitcode()})"
            _fail_active(self.store, run_ids, error, self._ends)  # a member stored before (cancelled) keeps its result
            return {run_id: self._final_status(run_id) for run_id in run_ids}
        with self._lock:
            if self._shutdown.is_set():
                worker.close()
            else:
                self._workers.append(worker)
        return finals

    def _work_group(self, run_ids: list[str]) -> None:
        """Runs trained as one group, in one thread: never raises; each outcome goes to the store."""
        with self._lock:
            configs = [self._configs[r] for r in run_ids]
            stops, progresses = [self._stops[r] for r in run_ids], [self._progress[r] for r in run_ids]
        finals = dict.fromkeys(run_ids, "failed")
        try:
            finals.update(self._train_group(run_ids, configs, stops, progresses))
        except BaseException as exc:  # a worker must record every failure, whatever it is
            self._record_failure(run_ids, exc)
            finals = {run_id: self._final_status(run_id) for run_id in run_ids}  # members stored before stay
        finally:
            self.store.close()
            with self._lock:
                for run_id in run_ids:
                    self._forget(run_id, finals[run_id])
                self._pump()

    def _record_failure(self, run_ids: list[str], exc: BaseException) -> None:
        """Store `exc` as the error of each run still active (a group member stored before
        keeps its result; never raises); after a CUDA out-of-memory error, give the cached
        memory back so the next run can start."""
        message = _failure_message(exc, self.device)
        log.warning("run%s %s failed: %s", "s" if len(run_ids) > 1 else "", ", ".join(run_ids), message)
        _fail_active(self.store, run_ids, message, self._ends)
        if _is_oom(exc):
            with contextlib.suppress(Exception):
                torch.cuda.empty_cache()

    def _train_group(self, run_ids: list[str], configs: list[RunConfig], stops: list[threading.Event],
                     progresses: list[Progress]) -> dict[str, str]:
        """Load data once, train the group, store each member's result; returns final statuses."""
        for run_id, progress in zip(run_ids, progresses):
            self.store.set_status(run_id, "running", device=self.device)
            self._set(progress, phase="loading data")
        if self.isolation == "process":
            return self._train_in_worker(run_ids, configs, False, stops, progresses)
        with record_preparation(self.store, run_ids):
            data = self._load_data(configs[0], progresses[0])
        if all(stop.is_set() for stop in stops):
            return {run_id: self._end_stopped(run_id) for run_id in run_ids}
        check_run_space(self.store.runs_dir, configs, data)
        step_every = _step_every(self.device)
        hooks = [_RunHooks(self, run_id, progress, stop, None, step_every=step_every)
                 for run_id, progress, stop in zip(run_ids, progresses, stops)]
        for progress in progresses:
            self._set(progress, phase="training", message="")
        finals: dict[str, str] = {}

        def store(g: int, result: Any) -> None:  # as soon as a member ends (a cancel: at once)
            finals[run_ids[g]] = _store_result(self.store, run_ids[g], result, self._shutdown)
            self._ended(run_ids[g], finals[run_ids[g]])

        with _stream(self.device):
            train_group(configs, data, device=self.device, hooks=hooks, on_result=store)
        return finals

    def _ended(self, run_id: str, final: str) -> None:
        """A member of a group still training ended (stored): it is no longer active here."""
        with self._lock:
            self._forget(run_id, final)
            self._changed.notify_all()

    def _final_status(self, run_id: str) -> str:
        """A run's status once its work has ended: the end the store has not taken yet, else
        the store's, else 'failed' (a store that cannot be read)."""
        kept = self._ends.get(run_id)
        return kept[0] if kept else (self._status_or_none(run_id) or "failed")

    def _end_stopped(self, run_id: str) -> str:
        status = "interrupted" if self._shutdown.is_set() else "cancelled"
        self.store.set_status(run_id, status, error="the job manager shut down" if status == "interrupted" else None)
        return status

    def _set(self, progress: Progress, **values: Any) -> None:
        with self._lock:
            for key, value in values.items():
                setattr(progress, key, value)

    # ---- data ----------------------------------------------------------------------------

    def _load_data(self, config: RunConfig, progress: Progress) -> dict:
        """Features for `config`: the injected loader, else the memoised dataset + feature cache."""
        if self._data_loader is not None:
            return self._data_loader(config)
        here = self.device if self._ray is None else ("cuda" if torch.cuda.is_available() else "cpu")
        self._data_cache.size = self.data_cache_size
        return self._data_cache.get(data_key(config), lambda: _default_loader(  # once per key at a time
            config, here, PrepProgress(lambda prep: self._set(progress, **prep.fields()))))

    # ---- control and queries -------------------------------------------------------------

    def cancel(self, run_id: str) -> None:
        """Queued: cancelled at once. Running here: stops within one step, ends 'cancelled'
        with its history. Running in another process: marked 'cancelled', which that process
        notices within a few seconds."""
        status = self.store.status(run_id)
        with self._lock:
            if run_id in self._queue:
                self._queue.remove(run_id)
                self.store.set_status(run_id, "cancelled")
                self._forget(run_id, "cancelled")
                self._changed.notify_all()
                return
            if run_id in self._stops:
                self._stops[run_id].set()
                return
        if status in ACTIVE:
            self.store.set_status(run_id, "cancelled")

    def record(self, run_id: str) -> RunRecord:
        """The run as stored, with the final status and error that the store has not taken yet
        (a full disk) in place of the stored ones: what the CLI and the dashboard show."""
        record = self.store.get(run_id)
        kept = self._ends.get(run_id)
        return replace(record, status=kept[0], error=kept[1]) if kept else record

    def unsaved_ends(self) -> dict[str, tuple[str, str | None]]:
        """run id -> (status, error) of ends the store has not taken yet (retried every 5 s)."""
        return self._ends.unsaved()

    def end_now(self, run_id: str, status: str, error: str | None = None) -> None:
        """Give a run that has not stopped by itself its final `status` now (a stopping CLI):
        stored, or kept until the store takes it. Never raises."""
        self._ends.end(self.store, run_id, status, error)

    def progress(self, run_id: str) -> Progress | None:
        """A snapshot of the run's live progress, or None if this manager never ran it."""
        with self._lock:
            p = self._progress.get(run_id)
            return None if p is None else replace(p, recent_losses=list(p.recent_losses))

    def all_progress(self) -> dict[str, Progress]:
        """Snapshots of every run this manager has queued or run, by id."""
        with self._lock:
            return {run_id: replace(p, recent_losses=list(p.recent_losses)) for run_id, p in self._progress.items()}

    def queued_behind(self, run_id: str) -> list[str]:
        """Ids a queued run waits for, nearest first: the queued runs ahead of it (last one
        first), then the runs training now. Empty when the run is not queued here."""
        with self._lock:
            if run_id not in self._queue:
                return []
            ahead = list(self._queue)[: list(self._queue).index(run_id)]
            return [*reversed(ahead), *self._threads]

    def active(self) -> list[str]:
        """Ids queued or running in this manager."""
        with self._lock:
            return list(self._threads) + list(self._queue)

    def wait(self, run_ids: Iterable[str] | None = None, timeout: float | None = None) -> bool:
        """Block until the runs (default: all of this manager's) have ended; False on timeout."""
        ids = list(run_ids) if run_ids is not None else self.active()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:  # a run of this manager has ended when its work has (stored or not); others: the store says
                local = set(self._threads) | set(self._queue)
                pending = [r for r in ids if r in local
                           or (r not in self._progress and self._status_or_none(r) in ACTIVE)]
                if not pending:
                    return True
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._changed.wait(0.5 if left is None else min(0.5, left))

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop: queued runs become 'interrupted', running ones stop within a step and end
        'interrupted' (resumable). Waits up to `timeout` s for the worker threads."""
        self._shutdown.set()
        with self._lock:
            queued = list(self._queue)
            self._queue.clear()
            for run_id in queued:
                with contextlib.suppress(EngineError):
                    self.store.set_status(run_id, "interrupted", error="the job manager shut down")
                self._forget(run_id, "interrupted")
            for event in self._stops.values():
                event.set()
            threads = [t for t in dict.fromkeys([*self._threads.values(), *self._started, self._heart])
                       if t is not threading.current_thread()]
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            workers, self._workers = self._workers, []
        for worker in workers:
            worker.close()
        if self._ray is not None:
            self._ray.close()
        self._ends.retry(self.store)  # a last try for ends the store could not take
