"""Runs on a Ray cluster: `JobManager(backend="ray")` hands each run to a Ray task.

Everything else stays in the driver (the dashboard's or the CLI's process): the queue, the
live Progress, cancel, resume, recovery and the SQLite store, which only the driver writes.
What moves to Ray is the training itself:

- data: the driver loads a run's features (the dataset and feature cache are local to it)
  and puts them into Ray's object store once per (dataset, feature config); every task on
  that data reads the same object, so worker nodes need no dataset files;
- code: on a remote cluster, the `engine` package travels with the tasks
  (`runtime_env={"py_modules": [engine]}`); each node needs only the Python packages;
- progress: a task reports steps, epochs and checkpoints to one `_Board` actor per driver
  without waiting for it; a pump thread in the driver drains the board into the Progress
  records and the store, so the Train page's live curves, Cancel and Resume work as with
  threads. Cancel is cooperative (the task polls the board), then `ray.cancel(force=True)`
  after `cancel_grace_s`.

Ray is optional (requirements-ray.txt) and imported only here, lazily. Traps measured on a
2-core machine (docs/ARCHITECTURE.md): `ray.init` must run in one long-lived thread, since
Ray's gcs_server and raylet die with the thread that started them (ray-project/ray#45570),
and a Streamlit script-run thread ends after every rerun; so one daemon owner thread per
process connects and disconnects, and nothing else calls `ray.init`.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import logging
import os
import queue
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..core.config import RunConfig
from ..core.errors import ConfigError, EngineError
from .memo import LruMemo

if TYPE_CHECKING:
    from .progress import Progress

log = logging.getLogger(__name__)

RAY_VERSION = "2.60.0"  # requirements-ray.txt
BACKEND_ENV = "MEDLEY_BACKEND"  # "local" (default) or "ray"
ADDRESS_ENV = "MEDLEY_RAY_ADDRESS"  # "local" (default: a Ray started by this process) or "host:port"
AUTH_ENV = "RAY_AUTH_MODE"
CPUS_ENV, GPUS_ENV = "MEDLEY_RAY_CPUS", "MEDLEY_RAY_GPUS"  # CPUs and GPUs (a fraction shares one) per run
BACKENDS = ("local", "ray")
CANCEL_GRACE_S = 10.0  # after a cooperative cancel, force-cancel a task still running this long
MAX_AHEAD_EPOCHS = 3  # a task waits while it is this many epochs ahead of what the driver stored
PUMP_EVERY_S = 0.2  # the driver drains the progress board this often
CONNECT_TIMEOUT_S = 120.0  # ray.init on a loaded 2-core machine took 6 s; a dead address fails fast anyway
MISSING = (f"the ray backend needs Ray, which is not installed: pip install -r requirements-ray.txt "
           f"(ray=={RAY_VERSION}); or use the local backend (--backend local, ${BACKEND_ENV}=local)")


class RayMissing(ConfigError):
    """backend="ray" was asked for but the ray package cannot be imported."""


def import_ray() -> Any:
    """The ray module, or RayMissing saying how to install it."""
    os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")  # no ray call may start or join a cluster by itself
    try:
        import ray
    except ImportError as exc:
        raise RayMissing(MISSING) from exc
    return ray


def backend_from_env(value: str | None = None) -> str:
    """`value`, else $MEDLEY_BACKEND, else "local"; "threads" is accepted for "local"."""
    text = (value if value is not None else os.environ.get(BACKEND_ENV, "")).strip().lower() or "local"
    text = "local" if text == "threads" else text
    if text not in BACKENDS:
        raise ConfigError(f"backend must be 'local' (this machine: threads or worker processes) or 'ray', not {text!r}"
                          + ("" if value is not None else f" (from ${BACKEND_ENV})"))
    return text


@dataclass(frozen=True)
class RayOptions:
    """Where and how runs train on Ray.

    address: "local" (start a Ray inside this process, `local_cpus` CPUs, all when None) or
    "host:port" of a running cluster's head (`ray start --head` prints it). cpus_per_run: CPUs
    a run's task reserves; torch uses that many threads (at least 1). gpus_per_run: GPUs it
    reserves, a fraction shares one (0.25: four runs per GPU; bookkeeping only, memory is not
    fenced); > 0 trains on "cuda". ship_code: send the engine package with each task
    (runtime_env py_modules); default: only for a remote address."""

    address: str = "local"
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0
    local_cpus: int | None = None
    ship_code: bool | None = None

    def __post_init__(self) -> None:
        address = str(self.address).strip() or "local"
        object.__setattr__(self, "address", address)
        if address != "local" and not _host_port(address):
            raise ConfigError(f"Ray address must be 'local' or host:port (e.g. 10.0.0.5:6379), not {self.address!r}")
        if not self.cpus_per_run > 0:
            raise ConfigError(f"CPUs per run must be > 0, not {self.cpus_per_run!r}")
        if not self.gpus_per_run >= 0:
            raise ConfigError(f"GPUs per run must be >= 0, not {self.gpus_per_run!r}")
        if self.gpus_per_run > 1 and self.gpus_per_run != int(self.gpus_per_run):
            raise ConfigError(f"GPUs per run above 1 must be whole, not {self.gpus_per_run!r}")
        if self.local_cpus is not None and int(self.local_cpus) < 1:
            raise ConfigError(f"local Ray CPUs must be at least 1, not {self.local_cpus!r}")

    @property
    def device(self) -> str:
        """Where a run's task trains: "cuda" when it reserves GPUs, else "cpu"."""
        return "cuda" if self.gpus_per_run > 0 else "cpu"

    @property
    def threads(self) -> int:
        """torch intra-op threads of a run's task: its CPUs, at least 1."""
        return max(1, int(self.cpus_per_run))

    def sends_code(self) -> bool:
        return self.address != "local" if self.ship_code is None else bool(self.ship_code)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "RayOptions":
        return cls(**json.loads(text))

    @classmethod
    def from_env(cls, **values: Any) -> "RayOptions":
        """Options from $MEDLEY_RAY_ADDRESS, $MEDLEY_RAY_CPUS and $MEDLEY_RAY_GPUS where set;
        `values` (field names) win over the environment."""
        env: dict[str, Any] = {}
        for field_name, name in (("address", ADDRESS_ENV), ("cpus_per_run", CPUS_ENV), ("gpus_per_run", GPUS_ENV)):
            text = os.environ.get(name, "").strip()
            if not text:
                continue
            if field_name == "address":
                env[field_name] = text
                continue
            try:
                env[field_name] = float(text)
            except ValueError:
                raise ConfigError(f"${name} must be a number, not {text!r}") from None
        return cls(**{**env, **values})


def _host_port(text: str) -> bool:
    host, sep, port = text.rpartition(":")
    return bool(sep and host and port.isdigit() and 0 < int(port) < 65536)


# ---- the connection: one owner thread per process --------------------------------------------


@dataclass(frozen=True)
class ClusterInfo:
    """What the connected cluster offers: its address, alive nodes, CPUs and GPUs (totals)."""

    address: str
    nodes: int
    cpus: float
    gpus: float

    def describe(self) -> str:
        """'2 nodes, 16 CPUs, 1 GPU at 10.0.0.5:6379'."""
        def n(x: float, word: str) -> str:
            value = int(x) if float(x).is_integer() else x
            return f"{value} {word}{'' if value == 1 else 's'}"
        return f"{n(self.nodes, 'node')}, {n(self.cpus, 'CPU')}, {n(self.gpus, 'GPU')} at {self.address}"


class _Owner:
    """The one thread that calls ray.init and ray.shutdown in this process, and lives as long
    as the process (a daemon): Ray's local gcs_server and raylet die with the thread that
    started them. Other threads hand it calls through `call` and wait for the answer."""

    def __init__(self) -> None:
        self._calls: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name="ray-owner", daemon=True)
        self._thread.start()
        self.address: str | None = None  # what this process asked for ("local" or host:port) while connected
        self.users = 0  # open RayRunners

    def _serve(self) -> None:
        while True:
            fn, done = self._calls.get()
            try:
                done.put((True, fn()))
            except BaseException as exc:  # handed back to the caller
                done.put((False, exc))

    def call(self, fn: Callable[[], Any], timeout: float = CONNECT_TIMEOUT_S) -> Any:
        done: queue.Queue = queue.Queue(maxsize=1)
        self._calls.put((fn, done))
        try:
            ok, value = done.get(timeout=timeout)
        except queue.Empty:
            raise EngineError(f"Ray did not answer within {timeout:.0f} s") from None
        if not ok:
            raise value
        return value


_OWNER_LOCK = threading.Lock()
_owner: _Owner | None = None


def _the_owner() -> _Owner:
    global _owner
    with _OWNER_LOCK:
        if _owner is None:
            _owner = _Owner()
        return _owner


def connect(options: RayOptions) -> ClusterInfo:
    """Connect this process to Ray as `options` says (once; again for the same address is a
    no-op). ConfigError when another address is in use by open runners, EngineError naming
    the address when Ray cannot be reached."""
    ray = import_ray()
    owner = _the_owner()

    def init() -> None:
        if ray.is_initialized():
            if options.address in (owner.address, ray.get_runtime_context().gcs_address):
                return
            if owner.users:
                raise ConfigError(f"this process already trains on Ray at {owner.address}; stop those runs "
                                  f"before connecting to {options.address}")
            ray.shutdown()
        extra: dict[str, Any] = {"num_cpus": options.local_cpus} if options.address == "local" and options.local_cpus else {}
        if options.sends_code():  # Ray ships a local folder only for the whole job (ray.init), not per task
            extra["runtime_env"] = {"py_modules": [engine_module_dir()]}
        try:
            ray.init(address=options.address, include_dashboard=False, log_to_driver=False,
                     configure_logging=False, **extra)
        except Exception as exc:  # ConnectionError, auth failures, a bad local start...
            raise EngineError(f"cannot connect to Ray at {options.address}: {type(exc).__name__}: "
                              f"{str(exc).strip()[:400]}{_hint(options.address)}") from exc
        owner.address = options.address

    with _OWNER_LOCK:
        owner.call(init)
    return cluster_info()


def _hint(address: str) -> str:
    """What to check when a cluster cannot be reached. Ray reports a refused token only in its
    log (a plain ConnectionError after ~20 s), so the token is always mentioned."""
    if address == "local":
        return ""
    return (f"; is its head running (`ray start --head`) and reachable from here? Ray's token authentication "
            f"(on by default) also needs {AUTH_ENV}=token here and the cluster's token in ~/.ray/auth_token "
            f"or $RAY_AUTH_TOKEN (`ray get-auth-token` on the head prints it)")


def connected() -> bool:
    """True while this process is connected to a Ray cluster (never imports ray)."""
    import sys

    ray = sys.modules.get("ray")
    return bool(ray is not None and _owner is not None and _owner.address and ray.is_initialized())


def cluster_info() -> ClusterInfo:
    """The connected cluster's alive nodes, CPUs and GPUs. EngineError when not connected."""
    ray = import_ray()
    if not connected():
        raise EngineError("not connected to Ray")
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    total = ray.cluster_resources()
    address = ray.get_runtime_context().gcs_address
    return ClusterInfo(address=address, nodes=len(nodes), cpus=float(total.get("CPU", 0)),
                       gpus=float(total.get("GPU", 0)))


def disconnect() -> None:
    """Disconnect this process from Ray (stopping a local one); nothing when not connected.
    ConfigError while runners are open."""
    if _owner is None:
        return
    ray = import_ray()
    owner = _owner

    def stop() -> None:
        if owner.users:
            raise ConfigError(f"{owner.users} Ray job manager(s) still open")
        if ray.is_initialized():
            ray.shutdown()
        owner.address = None

    with _OWNER_LOCK:
        owner.call(stop)


# ---- inside a task ----------------------------------------------------------------------------


class _BoardStore:
    """What the training hooks need of a RunStore, inside a Ray task: writes become reports to
    the board (the driver stores them); `status` asks the board, without waiting, whether the
    run was cancelled (the answer is read on a later call)."""

    def __init__(self, ray: Any, board: Any) -> None:
        self.ray, self.board = ray, board
        self._asked: Any = None
        self._stored = -1  # the last epoch the driver said it stored (-1: none yet)
        self._cancelled = False

    def append_epoch(self, run_id: str, record: dict, step_losses: list[float]) -> None:
        """Report the epoch; then, while the driver's store is more than MAX_AHEAD_EPOCHS behind,
        wait (or until the run is cancelled). Training in the driver's own process waits for
        its store writes the same way; without this, tiny epochs would race ahead of the live
        view and of Cancel."""
        self.board.report.remote(run_id, "epoch", (record, list(step_losses)))
        epoch = int(record["epoch"])
        while epoch - self._stored > MAX_AHEAD_EPOCHS:
            self._stored = self.ray.get(self.board.stored_epoch.remote(run_id))
            if epoch - self._stored <= MAX_AHEAD_EPOCHS or self.status(run_id) == "cancelled":
                return
            time.sleep(0.05)

    def save_checkpoint(self, run_id: str, checkpoint: dict) -> None:
        self.board.report.remote(run_id, "checkpoint", checkpoint)

    def status(self, run_id: str) -> str:
        if self._cancelled:  # once seen, for every later reader
            return "cancelled"
        if self._asked is None:
            self._asked = self.board.stopped.remote(run_id)
        ready, _ = self.ray.wait([self._asked], timeout=0)
        if not ready:
            return "running"
        self._cancelled = bool(self.ray.get(ready[0]))
        self._asked = None if self._cancelled else self.board.stopped.remote(run_id)  # the next poll reads a fresh answer
        return "cancelled" if self._cancelled else "running"


def where_am_i(device: str) -> str:
    """'cpu on ray node <hostname> (<ip>)': the device and node a task trains on."""
    import ray

    return f"{device} on ray node {socket.gethostname()} ({ray.util.get_node_ip_address()})"


def _train_task(run_id: str, config_json: str, data: dict, resume: dict | None, board: Any, device: str,
                threads: int, checkpoint_every_s: float) -> Any:
    """One run, inside a Ray task: train with hooks that report to the board; returns the
    TrainResult (its device names the node). The driver stores everything."""
    import ray
    import torch

    from .progress import Progress, _WorkerHooks, _WorkerHost, _stream
    from ..learn.train import train_run

    if not device.startswith("cuda"):
        torch.set_num_threads(threads)  # the CPUs this task reserved, no more
    where = where_am_i(device)
    board.report.remote(run_id, "where", where)
    config = RunConfig.from_json(config_json)
    progress = Progress(run_id, phase="training", epoch=int(resume["epoch"]) if resume else 0,
                        epochs=config.train.epochs)

    def send(p: Progress) -> None:
        board.report.remote(run_id, "progress", _progress_values(p))

    hooks = _WorkerHooks(_WorkerHost(_BoardStore(ray, board), checkpoint_every_s), run_id, progress,
                         threading.Event(), resume, step_every=10 if device.startswith("cuda") else 1, send=send)
    send(progress)
    with _stream(device):
        result = train_run(config, data, device=device, hooks=hooks, resume=resume)
    result.device = where
    ray.get(board.report.remote(run_id, "end", None))  # a flush: every report above is on the board now
    return result


def _progress_values(p: "Progress") -> dict:
    return {f.name: getattr(p, f.name) for f in dataclasses.fields(p) if f.name != "run_id"}


class _Board:
    """The progress board (a Ray actor, one per driver): tasks report to it, the driver drains
    it and sets the stop flags that tasks poll."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str, Any]] = []
        self.stops: set[str] = set()
        self.stored: dict[str, int] = {}  # run id -> last epoch the driver stored

    def report(self, run_id: str, kind: str, payload: Any) -> None:
        self.messages.append((run_id, kind, payload))

    def drain(self) -> list[tuple[str, str, Any]]:
        messages, self.messages = self.messages, []
        return messages

    def stop(self, run_id: str) -> None:
        self.stops.add(run_id)

    def forget(self, run_id: str, stored: int = -1) -> None:
        """A run starts (again) with `stored` epochs in the store: no stop flag."""
        self.stops.discard(run_id)
        self.stored[run_id] = stored

    def mark_stored(self, epochs: dict[str, int]) -> None:
        self.stored.update(epochs)

    def stored_epoch(self, run_id: str) -> int:
        return self.stored.get(run_id, -1)

    def stopped(self, run_id: str) -> bool:
        return run_id in self.stops


# ---- in the driver ----------------------------------------------------------------------------


def engine_module_dir() -> str:
    """The folder of the `engine` package (what runtime_env py_modules ships to the nodes)."""
    return str(Path(__file__).resolve().parents[1])  # engine/runs/ray_backend.py -> engine


class RayRunner:
    """A JobManager's link to Ray: connects, keeps the board and its pump, puts data into the
    object store, and trains one run per task (`train`, called from the manager's run thread)."""

    def __init__(self, manager: Any, options: RayOptions, cancel_grace_s: float = CANCEL_GRACE_S) -> None:
        self.ray = import_ray()
        self.manager, self.options, self.cancel_grace_s = manager, options, cancel_grace_s
        self.info = connect(options)
        owner = _the_owner()
        with _OWNER_LOCK:
            owner.users += 1
        self._closed = threading.Event()
        try:
            self.board = self.ray.remote(num_cpus=0)(_Board).remote()
            self._task = self.ray.remote(_train_task).options(
                num_cpus=options.cpus_per_run, num_gpus=options.gpus_per_run, max_retries=0)
        except BaseException:
            self.close()
            raise
        self._lock = threading.Lock()  # one drain at a time, applied in order
        self._progress: dict[str, "Progress"] = {}
        self._refs: LruMemo[Any] = LruMemo(manager.data_cache_size)  # data_key -> ObjectRef
        self._pump = threading.Thread(target=self._pump_loop, name="ray-progress-pump", daemon=True)
        self._pump.start()
        atexit.register(self.close)  # before Ray's own exit hook (registered earlier, so run later)

    def default_concurrency(self) -> int:
        """Runs the cluster can train at once with these options (at connect time), at least 1."""
        runs = self.info.cpus / self.options.cpus_per_run
        if self.options.gpus_per_run:
            runs = min(runs, self.info.gpus / self.options.gpus_per_run)
        return max(1, int(runs + 1e-9))

    # ---- data ---------------------------------------------------------------------------

    def data_ref(self, key: tuple, data: dict) -> Any:
        """The object-store copy of `data` for its key (put once, kept for the last few keys)."""
        self._refs.size = self.manager.data_cache_size
        return self._refs.get(key, lambda: self.ray.put(data))

    # ---- one run --------------------------------------------------------------------------

    def train(self, run_id: str, config: RunConfig, resume: dict | None, stop: threading.Event,
              progress: "Progress", data: dict, key: tuple) -> str:
        """Train one run in a task; relay its reports; store its result. Returns the final status."""
        manager, store = self.manager, self.manager.store
        manager._set(progress, message="sending the features to Ray", data_done=0, data_total=0)
        ref = self.data_ref(key, data)
        manager._set(progress, message="waiting for a Ray worker (a new one imports torch first)")
        with self._lock:
            self._progress[run_id] = progress
        self.board.forget.remote(run_id, int(resume["epoch"]) if resume else 0)
        task = self._task.remote(run_id, config.to_json(), ref, resume, self.board, self.options.device,
                                 self.options.threads, manager.checkpoint_every_s)
        try:
            result = self._await(run_id, task, stop)
            self.drain()  # the task flushed its reports before returning: apply them before the result
        finally:
            with self._lock:
                self._progress.pop(run_id, None)
        if result is None:  # force-cancelled
            status = "interrupted" if manager._shutdown.is_set() else "cancelled"
            store.set_status(run_id, status, error=("the job manager shut down" if status == "interrupted" else
                                                    f"stopped by force after {self.cancel_grace_s:.0f} s"))
            return status
        if result.status == "cancelled" and manager._shutdown.is_set():
            result.status, result.error = "interrupted", "the job manager shut down"
        store.save_result(run_id, result)
        if result.status in ("finished", "diverged"):
            store.delete_checkpoint(run_id)
        return result.status

    def _await(self, run_id: str, task: Any, stop: threading.Event) -> Any:
        """The task's TrainResult; None when it was force-cancelled. A cancel (`stop`) is passed to
        the task through the board, then forced after cancel_grace_s. A task's own exception is
        raised as itself (an EngineError keeps its message)."""
        ray = self.ray
        asked = None
        while True:
            ready, _ = ray.wait([task], timeout=PUMP_EVERY_S)
            if ready:
                break
            if stop.is_set() and asked is None:
                asked = time.monotonic()
                self.board.stop.remote(run_id)
            if asked is not None and time.monotonic() - asked >= self.cancel_grace_s:
                ray.cancel(task, force=True)
                asked = float("inf")
        try:
            return ray.get(task)
        except ray.exceptions.TaskCancelledError:
            return None
        except ray.exceptions.RayTaskError as exc:
            if asked == float("inf"):
                return None
            cause = getattr(exc, "cause", None)
            raise cause if isinstance(cause, BaseException) else exc
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as exc:
            if asked == float("inf"):
                return None
            raise EngineError(f"the Ray worker training this run stopped unexpectedly ({type(exc).__name__})") from exc

    # ---- the pump -------------------------------------------------------------------------

    def _pump_loop(self) -> None:
        while not self._closed.wait(PUMP_EVERY_S):
            if not self.ray.is_initialized():  # Ray was shut down (the process is exiting): nothing to drain
                break
            try:
                self.drain()
            except Exception as exc:  # a store or Ray hiccup: try again on the next round
                if self._closed.is_set() or not self.ray.is_initialized():
                    break
                log.warning("draining the Ray progress board failed: %s", exc)

    def drain(self) -> None:
        """Apply the board's reports in order: progress to the live records, epochs and
        checkpoints to the store, where the run trains to its record."""
        with self._lock:
            messages = self.ray.get(self.board.drain.remote(), timeout=60)
            store = self.manager.store
            # Only the latest progress and checkpoint of each run matter: a task can run ahead
            # of the store (nothing makes it wait for the driver), so older ones are skipped.
            latest_progress: dict[str, dict] = {}
            latest_checkpoint: dict[str, dict] = {}
            epochs: list[tuple[str, tuple]] = []
            for run_id, kind, payload in messages:
                if run_id not in self._progress:  # a run this driver no longer follows
                    continue
                if kind == "progress":
                    latest_progress[run_id] = payload
                elif kind == "epoch":
                    epochs.append((run_id, payload))
                elif kind == "checkpoint":
                    latest_checkpoint[run_id] = payload
                elif kind == "where":
                    store.set_status(run_id, "running", device=payload)
            for run_id, values in latest_progress.items():  # first: whoever sees an epoch sees its ETA
                self.manager._set(self._progress[run_id], **values)
            stored: dict[str, int] = {}
            for run_id, (record, losses) in epochs:
                store.append_epoch(run_id, record, losses)
                stored[run_id] = int(record["epoch"])
            if stored:  # lets tasks waiting on the driver (MAX_AHEAD_EPOCHS) go on
                self.board.mark_stored.remote(stored)
            for run_id, checkpoint in latest_checkpoint.items():
                store.save_checkpoint(run_id, checkpoint)

    def close(self) -> None:
        """Stop the pump and the board; the connection stays for other managers in this process."""
        if self._closed.is_set():
            return
        self._closed.set()
        if getattr(self, "_pump", None) is not None:
            self._pump.join(5)
        with contextlib.suppress(Exception):
            self.ray.kill(self.board)
        owner = _the_owner()
        with _OWNER_LOCK:
            owner.users = max(0, owner.users - 1)
