"""Training worker processes (JobManager isolation="process"), and what every trainer of the
queue shares: the torch threads for CPU training (`cpu_threads`), a run's data (`data_key`,
`_default_loader`: the dataset through the feature cache, as the CLI's --data resolves it).

A `_Worker` is one spawned process (`_worker_main`) that trains the jobs its parent thread
sends through a pipe (one run, or a seed group) one after another and writes the store itself;
progress goes back through the pipe (`_WorkerHooks`, engine.runs.progress).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..core.config import RunConfig
from ..core.errors import ConfigError
from ..core.processes import spawn_context
from ..learn.batched import train_group
from ..learn.train import train_run
from .budget import check_run_space
from .liveness import _fail_active, _failure_message, _store_result
from .progress import (PREP_COSTS, SEND_EVERY_S, PrepProgress, Progress, _step_every, _stream, _WorkerHooks,
                       _WorkerHost, record_preparation)
from .store import RunStore

THREADS_ENV = "MEDLEY_TORCH_THREADS"  # overrides cpu_threads() (torch intra-op threads for CPU training)


def cpu_threads(cpu_count: int | None = None, env: str | None = None) -> int:
    """torch intra-op threads for training on the CPU: $MEDLEY_TORCH_THREADS when set (a
    positive integer), else all cores but one (at least 1).

    Why not all cores: torch's OpenMP threads spin at every barrier, so a training run that
    owns every core stalls whenever anything else needs one (the dashboard's server, the
    browser showing it, another process). Measured on a loaded 2-core machine: the study's
    model trained 10 epochs in 0.8 s with 1 thread and 29 s with 2 (docs/PERFORMANCE.md)."""
    text = os.environ.get(THREADS_ENV, "") if env is None else env
    if text.strip():
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(f"${THREADS_ENV} must be a positive integer, not {text!r}") from None
        if value < 1:
            raise ConfigError(f"${THREADS_ENV} must be a positive integer, not {text!r}")
        return value
    cores = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
    return max(1, cores - 1)


def data_key(config: RunConfig) -> tuple:
    """What a run's features depend on: the dataset, the feature config and, when the run
    augments, its augmented views. Runs with the same key share one loaded copy."""
    tc = config.train
    return (config.data, config.features.digest(), tc.augment, tc.augment_views if tc.augment else 0,
            tc.augment_seed if tc.augment else 0, tc.outlier_exposure > 0)


def prep_plan(config: RunConfig, ds: Any = None) -> dict[str, float]:
    """The stages of preparing `config`'s data, in order, each with its weight for the one
    progress bar (engine.runs.progress.PrepProgress): clips x PREP_COSTS. Before the dataset
    `ds` is read every split counts 100 clips (a provisional plan, refined once it is read)."""
    def count(split: str) -> int:
        return 100 if ds is None else len(ds.subset(split))

    program = 100 if ds is None else len(getattr(ds, "program_view", None) or [])
    clips = {"reading the dataset": count("training") + count("validation") + count("test") + program,
             "features": count("training") + count("validation") + count("test")}
    if count("validation"):
        for view in ("channel", "source"):
            clips[f"cross-collection validation ({view})"] = count("validation")
    if program:
        clips["cross-collection validation (held-out programs)"] = program
    if config.train.augment:
        clips["augmented training copies"] = count("training") * config.train.augment_views
    if config.train.outlier_exposure > 0:
        from ..features.outliers import outlier_clip_count

        clips["outlier clips"] = outlier_clip_count()
    return {stage: n * PREP_COSTS[stage] for stage, n in clips.items()}


def _default_loader(config: RunConfig, device: str, progress: Callable[[int, int, str], None]) -> dict:
    """The run's dataset (resolved like the CLI's --data) through the feature cache: the three
    splits, the cross-collection validations ("validation_shift": channel, "validation_source":
    source and channel, "validation_program": held-out GM programs, demo only) and, when the run augments,
    the augmented training views (train.AUGMENTED). A PrepProgress as `progress` is told
    the stages (prep_plan), so that it shows one bar across them."""
    from ..data.augment import parse_augment
    from ..data.dataset import check_run_classes, resolve_dataset
    from ..features.extract import (FeatureSet, load_augmented_views, load_features, load_heldout_validation,
                           load_program_validation, load_source_validation)
    from ..features.outliers import load_outlier_features
    from ..learn.train import AUGMENTED, OUTLIERS

    prep = progress if isinstance(progress, PrepProgress) else PrepProgress()
    prep.plan(prep_plan(config))
    prep.begin("reading the dataset")
    ds = resolve_dataset(config.data or None, progress=progress)
    check_run_classes(ds, config)  # the classes it was queued with (engine.data.dataset.with_dataset_classes)
    prep.plan(prep_plan(config, ds))
    prep.begin("features")
    data = load_features(ds, config.features, progress=progress, device=device)
    if len(data["validation"].y):
        prep.begin("cross-collection validation (channel)")
        data["validation_shift"] = load_heldout_validation(ds, config.features, progress=progress, device=device)
        prep.begin("cross-collection validation (source)")
        data["validation_source"] = load_source_validation(ds, config.features, progress=progress, device=device)
    if "cross-collection validation (held-out programs)" in prep.weights:
        prep.begin("cross-collection validation (held-out programs)")
    program = load_program_validation(ds, config.features, progress=progress, device=device)
    if program is not None:
        data["validation_program"] = program
    tc = config.train
    if tc.augment:
        prep.begin("augmented training copies")
        views = load_augmented_views(ds, config.features, parse_augment(tc.augment), tc.augment_views,
                                     tc.augment_seed, progress=progress, device=device)
        data[AUGMENTED] = FeatureSet(x=views, y=data["training"].y, ids=data["training"].ids)
    if tc.outlier_exposure > 0:
        if config.classes:
            raise ConfigError("outlier exposure's instruments were chosen against Medley-solos-DB's 8 classes; "
                              "a dataset with its own classes cannot use it (set outlier exposure to 0)")
        prep.begin("outlier clips")
        data[OUTLIERS] = load_outlier_features(config.features, config.data, progress=progress)
    return data


# ---- training worker processes (isolation="process") ---------------------------------------
# Why: a run trained in the dashboard's own process shares the GIL with the server's threads;
# on a busy machine the training thread waits for the GIL whenever a page refreshes (measured:
# 1.5-2x slower with a page open). A worker process has its own interpreter and GIL, and the
# store and this job manager's API stay the same: the worker writes epochs, checkpoints and
# results to the store as the thread would; progress comes back through a pipe.


class _Worker:
    """One training process that trains jobs (one run, or a group of runs trained together)
    one after another (so the dataset and its features stay loaded between jobs), driven by
    the parent's thread of the current job."""

    def __init__(self, device: str, store: RunStore, checkpoint_every_s: float) -> None:
        with spawn_context() as ctx:  # a bare __main__ while it starts: under Streamlit it is a page script
            self._out, child_out = ctx.Pipe(duplex=False)  # worker -> parent: progress and results
            child_in, self._in = ctx.Pipe(duplex=False)    # parent -> worker: jobs and stop requests
            self._process = ctx.Process(
                target=_worker_main, name="medley-train-worker", daemon=True,
                args=(device, str(store.db_path), str(store.runs_dir), checkpoint_every_s, child_in, child_out))
            self._process.start()
        child_in.close()
        child_out.close()

    def alive(self) -> bool:
        return self._process.is_alive()

    def exitcode(self) -> int | None:
        return self._process.exitcode

    def run(self, run_ids: list[str], configs: list[RunConfig], resumed: bool, stops: dict[str, threading.Event],
            shutdown: threading.Event, report: Callable[[str, dict], None],
            ended: Callable[[str, str], None] = lambda run_id, final: None,
            unsaved: Callable[[str, str], None] = lambda run_id, error: None) -> dict[str, str] | None:
        """Train one run (or several as one group); each run's final status, or None when the
        process died on the way. `report(run_id, progress fields)` gets the relayed progress,
        `ended(run_id, final status)` a group member stored before the group ends,
        `unsaved(run_id, error)` a failure the process could not store (the parent keeps it);
        a set `stops[run_id]` is passed on to the process."""
        try:
            self._in.send(("train", list(run_ids), [c.to_json() for c in configs], resumed))
        except OSError:
            return None
        told: set[str] = set()
        while True:
            for run_id, stop in stops.items():
                if stop.is_set() and run_id not in told:
                    with contextlib.suppress(OSError):
                        self._in.send(("shutdown" if shutdown.is_set() else "stop", run_id))
                    told.add(run_id)
            try:
                ready = self._out.poll(0.2)
                message = self._out.recv() if ready else None
            except (EOFError, OSError):
                return None
            if message is None:
                if not self._process.is_alive() and not self._out.poll(0):
                    return None
                continue
            kind, *value = message
            if kind == "progress":
                report(*value)
            elif kind == "ended":
                ended(*value)
            elif kind == "done":
                for run_id, error in (value[1] if len(value) > 1 else {}).items():
                    unsaved(run_id, error)
                return value[0]

    def close(self) -> None:
        """Ask the process to exit (and make sure it does)."""
        with contextlib.suppress(OSError):
            self._in.send(("exit", None))
        self._process.join(5)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)
        for end in (self._in, self._out):
            with contextlib.suppress(OSError):
                end.close()


@dataclass
class _WorkerJob:
    """One job of a worker process: the runs (one, or a group) and a stop Event per run."""

    run_ids: list[str]
    config_json: list[str]  # RunConfig.to_json() per run (parsed where a bad one fails the job, not the inbox)
    resumed: bool
    stops: dict[str, threading.Event]


def _worker_main(device: str, db_path: str, runs_dir: str, checkpoint_every_s: float,
                 inbox: Any, outbox: Any) -> None:
    """A worker process: train the jobs the parent sends, until told to exit or the parent is gone."""
    if not device.startswith("cuda"):
        torch.set_num_threads(cpu_threads())
    store = RunStore(db_path, runs_dir)
    jobs: queue.Queue = queue.Queue()
    shutdown = threading.Event()
    current: dict[str, threading.Event] = {}  # run id -> stop Event, of the job being trained

    def listen() -> None:  # the inbox: jobs go to the queue, stop requests set the events at once
        try:
            while True:
                kind, *rest = inbox.recv()
                if kind == "train":
                    run_ids, configs, resumed = rest
                    stops = {run_id: threading.Event() for run_id in run_ids}
                    current.clear()
                    current.update(stops)
                    jobs.put(_WorkerJob(run_ids, configs, resumed, stops))
                elif kind in ("stop", "shutdown"):
                    if kind == "shutdown":
                        shutdown.set()
                    if rest and rest[0] in current:
                        current[rest[0]].set()
                elif kind == "exit":
                    break
        except (EOFError, OSError):  # the parent is gone: stop, and end as interrupted
            shutdown.set()
            for stop in list(current.values()):
                stop.set()
        jobs.put(None)

    threading.Thread(target=listen, name="inbox", daemon=True).start()
    data_cache: collections.OrderedDict[tuple, dict] = collections.OrderedDict()
    while (job := jobs.get()) is not None:
        finals, lost = dict.fromkeys(job.run_ids, "failed"), {}
        try:
            finals = _worker_train(store, job, device, checkpoint_every_s, shutdown, data_cache, outbox)
        except BaseException as exc:  # record every failure, as a worker thread does
            lost = _fail_active(store, job.run_ids, _failure_message(exc, device))  # not stored: the parent keeps it
            for run_id in job.run_ids:
                with contextlib.suppress(Exception):
                    finals[run_id] = "failed" if run_id in lost else store.status(run_id)
        with contextlib.suppress(OSError):
            outbox.send(("done", finals, lost))
    store.close()


def _worker_train(store: RunStore, job: _WorkerJob, device: str, checkpoint_every_s: float,
                  shutdown: threading.Event, data_cache: collections.OrderedDict, outbox: Any) -> dict[str, str]:
    """JobManager._train's (one run) or _train_group's (several) steps inside a worker
    process; returns each run's final status."""
    configs = [RunConfig.from_json(text) for text in job.config_json]
    resume = store.load_checkpoint(job.run_ids[0]) if job.resumed else None
    progresses = [Progress(run_id, phase="loading data", epoch=int(resume["epoch"]) if resume else 0,
                           epochs=config.train.epochs) for run_id, config in zip(job.run_ids, configs)]
    last = [0.0]

    def send(p: Progress) -> None:
        with contextlib.suppress(OSError):
            outbox.send(("progress", p.run_id,
                         {f.name: getattr(p, f.name) for f in dataclasses.fields(p) if f.name != "run_id"}))

    def data_progress(prep: PrepProgress) -> None:  # one bar across every stage of preparing the data
        for p in progresses:
            for name, value in prep.fields().items():
                setattr(p, name, value)
        if time.monotonic() - last[0] >= SEND_EVERY_S or prep.done >= prep.total:
            last[0] = time.monotonic()
            for p in progresses:
                send(p)

    key = data_key(configs[0])
    with record_preparation(store, job.run_ids):  # its own time, apart from training's (issue #30)
        if key in data_cache:
            data_cache.move_to_end(key)
        else:
            data_cache[key] = _default_loader(configs[0], device, PrepProgress(data_progress))
            while len(data_cache) > 2:
                data_cache.popitem(last=False)
    data = data_cache[key]
    if all(stop.is_set() for stop in job.stops.values()):
        status = "interrupted" if shutdown.is_set() else "cancelled"
        for run_id in job.run_ids:
            store.set_status(run_id, status, error="the job manager shut down" if status == "interrupted" else None)
        return dict.fromkeys(job.run_ids, status)
    check_run_space(store.runs_dir, configs, data)
    host = _WorkerHost(store, checkpoint_every_s)
    hooks = [_WorkerHooks(host, run_id, progress, job.stops[run_id], resume, step_every=_step_every(device), send=send)
             for run_id, progress in zip(job.run_ids, progresses)]
    for progress in progresses:
        progress.phase, progress.message = "training", ""
        send(progress)
    with _stream(device):
        if len(job.run_ids) == 1:
            result = train_run(configs[0], data, device=device, hooks=hooks[0], resume=resume)
            return {job.run_ids[0]: _store_result(store, job.run_ids[0], result, shutdown)}
        finals: dict[str, str] = {}

        def store_member(g: int, result: Any) -> None:  # as soon as a member ends (a cancel: at once)
            run_id = job.run_ids[g]
            finals[run_id] = _store_result(store, run_id, result, shutdown)
            progresses[g].phase = finals[run_id]
            send(progresses[g])
            with contextlib.suppress(OSError):
                outbox.send(("ended", run_id, finals[run_id]))

        train_group(configs, data, device=device, hooks=hooks, on_result=store_member)
    return finals
