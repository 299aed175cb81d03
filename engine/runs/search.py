"""Hyperparameter search with Optuna: every trial an ordinary run on the job queue.

    search = start_search(SearchSpec(name="s1", space=default_space(base), base=base, trials=20), manager)
    search.run()                       # until `trials` trials have ended (or stop() / Ctrl-C)
    resume_search("s1", manager).run() # after a restart: the study continues where it stopped

The study (TPE sampler, a median or successive-halving pruner) lives in cache/search.sqlite
(Optuna's RDBStorage over SQLite) beside the run store, so a search outlives its process.
Each trial is a run queued on the JobManager, named "trial N of NAME", tagged "search" and
"search:NAME" (the run table filters by it), cancellable like any run. Its objective is the
final accuracy on the validation view the protocol chooses on (docs/PROTOCOL.md: the program
view where the dataset has one, else the source view; the in-collection validation only
where neither exists, with a note), never test.

Pruning: after every epoch the trial reports that view's accuracy to Optuna and asks the
pruner. Where the run trains in this process (isolation "thread") the JobManager's
`epoch_listener` (called by the run's hooks, engine.runs.progress) answers at once and the
run stops before its next step; where it trains elsewhere (worker process, Ray) this driver
reads the stored epochs every POLL_S and cancels it. A pruned run ends "cancelled" with its
curves and the tag "pruned"; its trial is PRUNED in the study.
"""

from __future__ import annotations

import itertools
import json
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import optuna

from ..core.config import RunConfig, config_from_values
from ..core.errors import ConfigError, EngineError
from ..core.paths import cache_root
from ..core.search_space import SearchError, SearchSpace, parse_space
from .store import ACTIVE

POLL_S = 0.2  # how often the driver reads in-flight trials' stored epochs
PRUNERS = ("median", "halving", "none")
SAMPLERS = ("tpe", "grid")
OBJECTIVES = (("validation_program", "val_program_accuracy"), ("validation_source", "val_source_accuracy"),
              ("validation", "val_accuracy"))  # in the protocol's order; the last only where no cross view exists
FALLBACK_NOTE = "no cross-collection validation in this data: the objective is the in-collection validation"
ENDED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
SEARCH_TAG = "search"
PRUNED_TAG = "pruned"


def search_tag(name: str) -> str:
    return f"search:{name}"


def search_db_path() -> Path:
    """cache/search.sqlite: the Optuna studies, beside the run store (cache/runs.sqlite)."""
    return cache_root() / "search.sqlite"


def storage(path: Path | None = None) -> Any:
    """Optuna's RDBStorage on the search database (made if missing)."""
    path = Path(path or search_db_path())
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(f"sqlite:///{path}", engine_kwargs={"connect_args": {"timeout": 30}})


@dataclass(frozen=True)
class SearchSpec:
    """A search: its name, space, the base configuration every trial starts from (its data,
    epochs and seed included), how many trials, the sampler ("tpe", or "grid": every
    combination of the space's choices, in order, then random points), the pruner and the
    sampler's seed."""

    name: str
    space: SearchSpace
    base: RunConfig
    trials: int = 20
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int = 0
    startup_trials: int | None = None  # TPE's random trials first (default: a quarter of trials, 2..10)

    def __post_init__(self) -> None:
        if not self.name or not str(self.name).strip() or len(self.name) > 80:
            raise SearchError(f"a search needs a name of 1 to 80 characters, not {self.name!r}")
        if self.trials < 1:
            raise SearchError(f"a search needs at least one trial, not {self.trials}")
        if self.sampler not in SAMPLERS:
            raise SearchError(f"sampler must be one of {', '.join(SAMPLERS)}, not {self.sampler!r}")
        if self.pruner not in PRUNERS:
            raise SearchError(f"pruner must be one of {', '.join(PRUNERS)}, not {self.pruner!r}")
        if self.sampler == "grid":
            self.space.grid()  # SearchError for a continuous range

    def to_attrs(self) -> dict[str, Any]:
        return {"space": self.space.to_dict(), "base": self.base.to_dict(), "trials": self.trials,
                "sampler": self.sampler, "pruner": self.pruner, "seed": self.seed,
                "startup_trials": self.startup_trials, "seeds": [self.base.train.seed]}

    @classmethod
    def from_attrs(cls, name: str, attrs: dict[str, Any]) -> "SearchSpec":
        base = RunConfig.from_dict(attrs["base"])
        return cls(name=name, space=parse_space(attrs["space"], base), base=base, trials=int(attrs["trials"]),
                   sampler=attrs.get("sampler", "tpe"), pruner=attrs.get("pruner", "median"),
                   seed=int(attrs.get("seed", 0)), startup_trials=attrs.get("startup_trials"))


def _sampler(spec: SearchSpec, offset: int = 0) -> Any:
    if spec.sampler == "grid":  # every point is enqueued when the study starts (start_search)
        return optuna.samplers.RandomSampler(seed=spec.seed)
    startup = spec.startup_trials if spec.startup_trials is not None else max(2, min(10, spec.trials // 4))
    return optuna.samplers.TPESampler(seed=spec.seed + offset, n_startup_trials=startup)


def _pruner(spec: SearchSpec) -> Any:
    if spec.pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    return optuna.pruners.NopPruner()


def epoch_value(record: dict) -> float | None:
    """An epoch's objective: the first of the protocol's views present in its history record."""
    for _, key in OBJECTIVES:
        value = record.get(key)
        if value is not None and math.isfinite(value):
            return float(value)
    return None


def final_value(metrics: dict) -> tuple[float | None, str | None]:
    """(accuracy, split) of a finished run on the first of the protocol's views it was evaluated on."""
    for split, _ in OBJECTIVES:
        value = ((metrics or {}).get(split) or {}).get("accuracy")
        if value is not None:
            return float(value), split
    return None, None


class _Listeners:
    """JobManager.epoch_listener: every attached search's pruner; True when one says stop."""

    def __init__(self) -> None:
        self.judges: list[Callable[[str, dict], bool]] = []

    def __call__(self, run_id: str, record: dict) -> bool:
        return any([judge(run_id, record) for judge in list(self.judges)])


def _attach(manager: Any, judge: Callable[[str, dict], bool]) -> None:
    listeners = getattr(manager, "epoch_listener", None)
    if not isinstance(listeners, _Listeners):
        listeners = manager.epoch_listener = _Listeners()
    listeners.judges.append(judge)


def _detach(manager: Any, judge: Callable[[str, dict], bool]) -> None:
    listeners = getattr(manager, "epoch_listener", None)
    if isinstance(listeners, _Listeners) and judge in listeners.judges:
        listeners.judges.remove(judge)


@dataclass
class _InFlight:
    trial: Any  # optuna.Trial
    run_id: str
    reported: int = 0  # epochs reported to the pruner
    prune: bool = False


class Search:
    """The driver of one study: asks Optuna for trials, queues them as runs on `manager`,
    prunes them on their epochs and tells Optuna how each ended. Thread-safe; `run` blocks."""

    def __init__(self, spec: SearchSpec, study: Any, manager: Any, parallel: int | None = None) -> None:
        self.spec, self.study, self.manager = spec, study, manager
        self.parallel = max(1, int(parallel or getattr(manager, "max_concurrent", 1)))
        self._lock = threading.RLock()
        self._inflight: dict[str, _InFlight] = {}
        self._stop = threading.Event()
        self.error: str | None = None

    # ---- pruning ----------------------------------------------------------------------

    def judge(self, run_id: str, record: dict) -> bool:
        """Report a trial run's epoch to the pruner; True when the trial should stop now."""
        with self._lock:
            item = self._inflight.get(run_id)
            epoch = int(record.get("epoch") or 0)
            if item is None or item.prune or epoch <= item.reported:
                return bool(item and item.prune)
            value = epoch_value(record)
            item.reported = epoch
            if value is None:
                return False
            item.trial.report(value, epoch)
            item.prune = self.spec.pruner != "none" and item.trial.should_prune()
            return item.prune

    def _poll_epochs(self) -> None:
        """Judge the stored epochs of runs training elsewhere (worker process, Ray); cancel the pruned."""
        store = self.manager.store
        for run_id, item in list(self._inflight.items()):
            try:
                if store.epochs_done(run_id) <= item.reported:
                    continue
                history = store.get(run_id).history
            except EngineError:
                continue
            for record in history:
                if self.judge(run_id, record):
                    self.manager.cancel(run_id)
                    break

    # ---- the loop ---------------------------------------------------------------------

    def stop(self) -> None:
        """End the search: no new trials; the running ones are cancelled (their trials FAIL, resumable)."""
        self._stop.set()
        for run_id in list(self._inflight):
            try:
                self.manager.cancel(run_id)
            except EngineError:
                pass

    def counted(self) -> int:
        """Trials that count towards `trials`: every ended one but those interrupted or stopped."""
        return sum(1 for t in self.study.get_trials(deepcopy=False, states=ENDED)
                   if t.user_attrs.get("ended") not in ("interrupted", "stopped"))

    def run(self, on_change: Callable[[], None] | None = None) -> "Search":
        """Queue and judge trials until `spec.trials` have ended or `stop()`. SearchError when
        the search ends with trials but none completed (every one diverged or failed); the
        runs stay in the store either way."""
        _attach(self.manager, self.judge)
        try:
            while not self._stop.is_set():
                self._fill()
                if not self._inflight:
                    break
                self._poll_epochs()
                self.manager.wait(list(self._inflight), timeout=POLL_S)  # back early when all have ended
                active = set(self.manager.active())
                for run_id in [r for r in list(self._inflight) if r not in active]:
                    self._finish(run_id)
                    if on_change:
                        on_change()
        except BaseException:
            self.stop()
            self._drain()
            raise
        finally:
            _detach(self.manager, self.judge)
        if self._stop.is_set():
            self._drain()
        self._check_outcome()
        return self

    def _fill(self) -> None:
        """Ask for and queue trials while slots are free and trials are left."""
        while (not self._stop.is_set() and len(self._inflight) < self.parallel
               and self.counted() + len(self._inflight) < self.spec.trials):
            if not self._queue_one():
                break

    def _queue_one(self) -> bool:
        with self._lock:
            trial = self.study.ask()
            values = self.spec.space.suggest(trial)
            try:
                config = config_from_values(values, self.spec.base)
            except ConfigError as exc:  # a combination the configuration refuses
                trial.set_user_attr("ended", "invalid")
                trial.set_user_attr("error", str(exc))
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
                return True
            name = f"trial {trial.number} of {self.spec.name}"
            run_id = self.manager.submit(config, name=name, tags=(SEARCH_TAG, search_tag(self.spec.name)))
            trial.set_user_attr("run_id", run_id)
            self._inflight[run_id] = _InFlight(trial, run_id)
            return True

    def _finish(self, run_id: str) -> None:
        """Tell Optuna how a trial's run ended: COMPLETE (its objective), PRUNED (tagged), or FAIL."""
        with self._lock:
            item = self._inflight[run_id]
            try:
                record = self.manager.record(run_id)
            except EngineError as exc:  # deleted from the run table meanwhile
                self._inflight.pop(run_id)
                item.trial.set_user_attr("ended", "deleted")
                item.trial.set_user_attr("error", str(exc)[:500])
                self.study.tell(item.trial, state=optuna.trial.TrialState.FAIL)
                return
            # the epochs no poll saw (a run that ended between two) go to the pruner while the trial is
            # still in flight: judge() reads it from _inflight, and the trials after it are judged against them
            self._judge_history(item, record.history)
            self._inflight.pop(run_id)
            tell_outcome(self.study, item.trial, record, pruned=item.prune, stopped=self._stop.is_set())
            if item.prune and record.status == "cancelled":
                self.manager.store.set_tags(run_id, [*record.tags, PRUNED_TAG])

    def _judge_history(self, item: _InFlight, history: list[dict]) -> None:
        for record in history:  # epochs not seen yet (a run that ended between polls)
            if int(record.get("epoch") or 0) > item.reported:
                self.judge(item.run_id, record)

    def _drain(self) -> None:
        """Wait for the cancelled trials' runs to end, then tell Optuna."""
        ids = list(self._inflight)
        if ids:
            self.manager.wait(ids, timeout=30.0)
        for run_id in ids:
            if run_id not in set(self.manager.active()):
                self._finish(run_id)

    def _check_outcome(self) -> None:
        ended = self.study.get_trials(deepcopy=False, states=ENDED)
        if not ended or any(t.state == optuna.trial.TrialState.COMPLETE for t in ended):
            return
        if self._stop.is_set() or not all(t.user_attrs.get("ended") in ("diverged", "failed", "invalid") for t in ended):
            return  # pruned or cancelled trials: nothing wrong with the search itself
        reasons = [t.user_attrs.get("error") for t in ended if t.user_attrs.get("error")]
        diverged = sum(1 for t in ended if t.user_attrs.get("ended") == "diverged")
        what = "diverged" if diverged == len(ended) else "failed or diverged"
        advice = ("narrow the space (a lower train.lr range), or add train.grad_clip or train.standardize to the base"
                  if what == "diverged" else "fix what the first error says, then start the search again")
        raise SearchError(f"every trial of search {self.spec.name!r} {what} ({len(ended)} of {len(ended)})"
                          + (f"; the first: {reasons[0][:300]}" if reasons else "")
                          + f". To go on: {advice}; the trials' runs stay in the run table")


def tell_outcome(study: Any, trial: Any, record: Any, *, pruned: bool, stopped: bool = False) -> None:
    """Record a trial run's end in the study (and why, in the trial's user attributes)."""
    state = optuna.trial.TrialState
    status = record.status
    trial.set_user_attr("epochs", len(record.history or []))
    if status == "finished":
        value, split = final_value(record.metrics)
        if value is not None:
            trial.set_user_attr("split", split)
            trial.set_user_attr("ended", "finished")
            study.tell(trial, value)
            return
        trial.set_user_attr("error", "no validation metric")
    if pruned and status == "cancelled":
        trial.set_user_attr("ended", "pruned")
        study.tell(trial, state=state.PRUNED)
        return
    ended = "stopped" if stopped and status in ("cancelled", "interrupted") else status
    trial.set_user_attr("ended", ended)
    if record.error:
        trial.set_user_attr("error", str(record.error)[:500])
    study.tell(trial, state=state.FAIL)


# ---- starting, resuming, reading ---------------------------------------------------------


def start_search(spec: SearchSpec, manager: Any, path: Path | None = None) -> Search:
    """A new study named spec.name (SearchError when one exists: resume it, or choose another name)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(study_name=spec.name, storage=storage(path), direction="maximize",
                                    sampler=_sampler(spec), pruner=_pruner(spec))
    except optuna.exceptions.DuplicatedStudyError:
        raise SearchError(f"a search named {spec.name!r} exists; continue it with `search --resume {spec.name}` "
                          f"or choose another name") from None
    for key, value in spec.to_attrs().items():
        study.set_user_attr(key, value)
    if spec.sampler == "grid":  # Optuna's GridSampler stops the study from inside optimize(); here trials are asked
        grid = spec.space.grid()
        for combo in itertools.product(*grid.values()):
            study.enqueue_trial(dict(zip(grid, combo)))
    study.set_user_attr("created", time.time())
    return Search(spec, study, manager)


def load_study(name: str, path: Path | None = None) -> tuple[SearchSpec, Any]:
    """(spec, study) of a stored search; SearchError naming the known ones when it does not exist."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = storage(path)
    try:
        study = optuna.load_study(study_name=name, storage=store)
    except KeyError:
        known = optuna.get_all_study_names(store)
        raise SearchError(f"no search named {name!r}" + (f"; known: {', '.join(known)}" if known else "; none yet")) from None
    return SearchSpec.from_attrs(name, study.user_attrs), study


def resume_search(name: str, manager: Any, path: Path | None = None) -> Search:
    """A stored search, ready to continue: trials left RUNNING by a process that stopped are
    told how their runs ended (finished: COMPLETE; otherwise FAIL "interrupted", not counted)."""
    spec, stored = load_study(name, path)
    study = optuna.load_study(study_name=name, storage=storage(path), pruner=_pruner(spec),
                              sampler=_sampler(spec, offset=len(stored.get_trials(deepcopy=False))))
    for frozen in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        trial = optuna.Trial(study, frozen._trial_id)
        run_id = frozen.user_attrs.get("run_id")
        record = _record_or_none(manager.store, run_id)
        if record is not None and record.status in ACTIVE and run_id in set(manager.active()):
            continue
        if record is not None and record.status == "finished":
            tell_outcome(study, trial, record, pruned=False)
        else:
            trial.set_user_attr("ended", "interrupted")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return Search(spec, study, manager)


def _record_or_none(store: Any, run_id: str | None) -> Any:
    if not run_id:
        return None
    try:
        return store.get(run_id)
    except EngineError:
        return None


def search_names(path: Path | None = None) -> list[str]:
    """Every stored search, oldest first."""
    if not Path(path or search_db_path()).exists():
        return []
    return list(optuna.get_all_study_names(storage(path)))


@dataclass
class TrialRow:
    """One trial as the views show it."""

    number: int
    state: str  # "complete" | "pruned" | "fail" | "running"
    value: float | None
    params: dict[str, Any]
    run_id: str | None
    epochs: int
    started: float | None  # Unix seconds
    ended: float | None
    why: str | None = None


def trial_rows(study: Any) -> list[TrialRow]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append(TrialRow(number=t.number, state=t.state.name.lower(), value=t.value, params=dict(t.params),
                             run_id=t.user_attrs.get("run_id"),
                             epochs=int(t.user_attrs.get("epochs", len(t.intermediate_values))),
                             started=t.datetime_start.timestamp() if t.datetime_start else None,
                             ended=t.datetime_complete.timestamp() if t.datetime_complete else None,
                             why=t.user_attrs.get("ended")))
    return rows


def search_summary(name: str, path: Path | None = None) -> dict[str, Any]:
    """JSON-able state of a search: spec, counts per state, best trial, trials, progress and
    time left (mean seconds of an ended trial x trials left; None before one has ended)."""
    spec, study = load_study(name, path)
    rows = trial_rows(study)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.state] = counts.get(row.state, 0) + 1
    complete = [r for r in rows if r.state == "complete" and r.value is not None]
    best = max(complete, key=lambda r: r.value) if complete else None
    counted = [r for r in rows if r.state != "running" and r.why not in ("interrupted", "stopped")]
    durations = [r.ended - r.started for r in counted if r.started and r.ended]
    left = max(0, spec.trials - len(counted))
    splits = {study.trials[r.number].user_attrs.get("split") for r in complete} - {None}
    split = splits.pop() if len(splits) == 1 else None
    return {"name": name, "trials": spec.trials, "done": len(counted), "counts": counts, "sampler": spec.sampler,
            "pruner": spec.pruner, "space": spec.space.to_dict(), "base": spec.base.to_dict(),
            "seeds": list(study.user_attrs.get("seeds", [spec.base.train.seed])), "objective_split": split,
            "note": FALLBACK_NOTE if split == "validation" else None,
            "best": None if best is None else {"trial": best.number, "value": best.value, "params": best.params,
                                               "run_id": best.run_id},
            "eta_s": (sum(durations) / len(durations)) * left if durations else None,
            "rows": [row.__dict__ for row in rows]}


def importances(name: str, path: Path | None = None) -> dict[str, float]:
    """Parameter importance (Optuna's fANOVA) over the completed trials; {} with fewer than
    two, or when every completed trial has the same value."""
    _, study = load_study(name, path)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < 2 or len({t.value for t in complete}) < 2:
        return {}
    try:
        return dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError):
        return {}


def trial_config(spec: SearchSpec, params: dict[str, Any]) -> RunConfig:
    """The configuration a trial trained: the search's base with its parameters."""
    return config_from_values(params, spec.base)


def format_summary(summary: dict[str, Any]) -> str:
    """A search as text: one line per trial, then the best."""
    lines = [f"search {summary['name']}: {summary['done']}/{summary['trials']} trials "
             f"({', '.join(f'{n} {s}' for s, n in sorted(summary['counts'].items()))}); "
             f"objective: {summary['objective_split'] or '-'} accuracy"]
    if summary.get("note"):
        lines.append(f"note: {summary['note']}")
    for row in summary["rows"]:
        value = "-" if row["value"] is None else f"{100 * row['value']:5.1f}%"
        params = ", ".join(f"{k.split('.')[-1]} {_short(v)}" for k, v in row["params"].items())
        lines.append(f"  trial {row['number']:>3} {row['state']:<8} {value:>6} {row['epochs']:>3} epochs  {params}")
    best = summary["best"]
    lines.append("best: none completed" if best is None else
                 f"best: trial {best['trial']} ({100 * best['value']:.1f}%), run {best['run_id']}; "
                 f"confirm it with `python -m engine confirm {summary['name']}`")
    return "\n".join(lines)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else json.dumps(value) if isinstance(value, bool) else str(value)
