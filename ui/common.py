"""Shared Streamlit plumbing: one store and one job manager per server, the dataset in use, the sidebar.

Contract used by every page (keep these names):
- get_store() -> engine.runs.store.RunStore            (st.cache_resource: one per server)
- get_manager() -> engine.runs.jobs.JobManager         (st.cache_resource: one per server)
- data_setting() -> str                           the dataset value for RunConfig.data ("" = default resolution:
                                                  --data/$MEDLEY_DATA/~/mir_datasets/... else the demo)
- load_dataset_cached(data: str) -> MedleyDataset (st.cache_resource keyed by data)
- render_sidebar() -> None                        dataset in use + live running/queued jobs, on every page

Also here (usable by any page):
- set_data_setting(value), describe_data(data) -> str, dataset_ready(data) -> bool,
  require_dataset(data) -> MedleyDataset (st.info + "Make demo data" button + st.stop when the demo is missing),
  compute_device() -> str, job_progress() -> list[dict], run_label(record) -> str, fmt_pct(x) -> str,
  percent_style(frame, columns) (rates shown as "73.4%" in st.dataframe),
  backend_setting() -> dict, set_backend(backend, address, cpus, gpus) -> str | None, backend_summary() -> str,
  plain(text) -> str (user text made literal inside Markdown: names, file names, their errors).
(Per-epoch history frames for charts: ui.compare.history_frame.)
"""

from __future__ import annotations

import re
import sys
import threading
import time
from dataclasses import asdict, is_dataclass

import streamlit as st

from engine.core import paths
from engine.data.dataset import demo_size, is_custom_layout
from engine.core.errors import EngineError
from ui.live import PROGRESS_EVERY_S

DATA_KEY = "data_setting"  # session_state key (not a widget key, so it survives page switches)
_DATA_LOCK = threading.Lock()  # one dataset load / demo build at a time per server


# ---- store and jobs ---------------------------------------------------------------------


@st.cache_resource(show_spinner=False)
def _open_store():
    """The run store (cache/runs.sqlite), one per server. Runs left 'running' by a dead
    process are marked interrupted once, when the server first opens the store."""
    from engine.runs.store import RunStore

    store = RunStore()
    store.mark_interrupted()
    return store


STORE_CHECK_EVERY_S = 10.0  # how often get_store re-checks the database file (PRAGMA quick_check)
OWNERS_CHECK_EVERY_S = 2.0  # how often get_store looks for runs whose process died
_last_store_check = [0.0]
_last_owners_check = [0.0]


def get_store():
    """The run store, one per server. When its file is damaged: an error naming the problem,
    a *Rebuild the run index* button, and st.stop() (the page stops there, no traceback)."""
    from engine.core.errors import StoreDamaged, StoreError

    try:
        store = _open_store()
        if time.monotonic() - _last_store_check[0] >= STORE_CHECK_EVERY_S:
            store.check()
            _last_store_check[0] = time.monotonic()
        if time.monotonic() - _last_owners_check[0] >= OWNERS_CHECK_EVERY_S:
            store.mark_interrupted()  # a killed CLI or server: its runs become interrupted (resumable)
            _last_owners_check[0] = time.monotonic()
        if "store_flash" in st.session_state:
            st.success(st.session_state.pop("store_flash"))
        return store
    except StoreDamaged as exc:
        _last_store_check[0] = 0.0
        st.error(f"The run store cannot be read: {plain(exc)}")
        if st.button("Rebuild the run index", type="primary", key="rebuild_store",
                     help="Keeps the damaged file beside it and lists every saved run again from its folder."):
            _rebuild_store()
        st.stop()
    except StoreError as exc:
        st.error(f"The run store cannot be used: {plain(exc)}")
        st.stop()


def _rebuild_store() -> None:
    """Rebuild the index from the run folders (engine.runs.store.rebuild_store) and reopen it."""
    from engine.runs.store import rebuild_store

    _open_store.clear()
    get_manager.clear()
    report = rebuild_store()
    kept = f" The damaged file was kept as `{report.moved_to}`." if report.moved_to else ""
    skipped = f" Not recovered: {', '.join(f for f, _ in report.skipped)}." if report.skipped else ""
    st.session_state["store_flash"] = f"Rebuilt the run index: {len(report.recovered)} run(s) recovered.{kept}{skipped}"
    st.rerun()


@st.cache_resource(show_spinner=False)
def get_manager():
    """The job manager, one per server, sharing the store. Locally, runs train in worker
    processes: a run in the server's own process would share its GIL with every page
    refresh. With the ray backend (backend_setting) each run is a task on a Ray cluster; when
    Ray cannot be used, the runs train locally and backend_setting() says why."""
    from engine.runs.jobs import JobManager

    setting = backend_setting()
    if setting["backend"] == "ray":
        try:  # Ray starts in its own daemon thread (engine.runs.ray_backend), never in this script run's
            return JobManager(_open_store(), isolation="process", backend="ray", ray_options=setting["options"])
        except EngineError as exc:
            setting.update(backend="local", problem=f"Runs train on this machine: {exc}")
    return JobManager(_open_store(), isolation="process", backend="local")


_BACKEND: dict = {}  # this server's choice: {"backend", "options" (RayOptions or None), "problem"}


def backend_setting() -> dict:
    """Where this server's runs train: {"backend": "local" | "ray", "options": a RayOptions
    (Ray address, CPUs and GPUs per run) or None, "problem": why Ray is not used, or None}.
    Starts from $MEDLEY_BACKEND and $MEDLEY_RAY_ADDRESS / _CPUS / _GPUS."""
    if not _BACKEND:
        from engine.runs.ray_backend import RayOptions, backend_from_env

        try:
            _BACKEND.update(backend=backend_from_env(), options=RayOptions.from_env(), problem=None)
        except EngineError as exc:
            _BACKEND.update(backend="local", options=None, problem=f"Runs train on this machine: {exc}")
    return _BACKEND


def set_backend(backend: str, address: str = "local", cpus_per_run: float = 1.0, gpus_per_run: float = 0.0) -> str | None:
    """Switch where this server's runs train ("local" or "ray" at `address`). None when
    switched; else why not (runs still active, a bad value, Ray missing or unreachable: then
    the runs train locally)."""
    from engine.runs.ray_backend import RayOptions

    manager = get_manager()
    if manager.active():
        return (f"{len(manager.active())} run(s) are queued or running on the current backend; switch when "
                "they have ended (or cancel them).")
    try:
        options = RayOptions(address=address, cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run)
    except EngineError as exc:
        return str(exc)
    manager.shutdown()
    get_manager.clear()
    backend_setting().update(backend=backend, options=options, problem=None)
    get_manager()
    return backend_setting()["problem"]


def backend_summary() -> str:
    """One line: where runs train, and on Ray the cluster's nodes, CPUs and GPUs (live)."""
    manager = get_manager()
    if manager.backend != "ray":
        return "this machine (a worker process per run)"
    from engine.runs.ray_backend import cluster_info

    options = manager.ray_options
    try:
        cluster = cluster_info().describe()
    except EngineError as exc:
        cluster = f"Ray at {options.address} ({exc})"
    return (f"Ray cluster: {cluster}; each run reserves {options.cpus_per_run:g} CPU(s) and "
            f"{options.gpus_per_run:g} GPU(s), {manager.max_concurrent} at once")


TERMINAL_PHASES = ("finished", "failed", "cancelled", "interrupted", "diverged", "deleted")


# One snapshot of the job manager's progress is shared by every view for a little less than the
# refresh pace (ui.live.PROGRESS_EVERY_S): the sidebar and the Train page, whose timers start in
# the same script run and tick at that pace, then show the same stage and fraction instead of
# two moments a second apart.
SNAPSHOT_S = 0.8 * PROGRESS_EVERY_S
_SNAPSHOT: dict = {}  # include_ended -> (monotonic time, manager, jobs)


def job_progress(include_ended: bool = False) -> list[dict]:
    """Queued and running jobs of this server's manager (manager.all_progress()) as dicts, one
    snapshot reused for SNAPSHOT_S seconds (the sidebar and the page show the same moment):
    run_id, name, status ("queued" | "running" | a final status), phase, fraction (0..1),
    message (one line: ui.live.progress_line), eta (seconds of training left or None), epoch,
    epochs, step, steps_per_epoch, recent_losses (last step losses), val_accuracy, data_done,
    data_total, behind (name of the run a queued one waits for, else None)."""
    manager = get_manager()
    taken = _SNAPSHOT.get(include_ended)
    if taken and taken[1] is manager and time.monotonic() - taken[0] < SNAPSHOT_S:
        return [dict(job) for job in taken[2]]
    jobs = _job_progress(manager, include_ended)
    _SNAPSHOT[include_ended] = (time.monotonic(), manager, jobs)
    return [dict(job) for job in jobs]


def forget_progress_snapshot() -> None:
    """The next job_progress() reads the manager afresh (a full page run, a cancel, a start)."""
    _SNAPSHOT.clear()


def _job_progress(manager, include_ended: bool) -> list[dict]:
    """job_progress's dicts, read now."""
    from ui.live import progress_line

    store = get_store()
    names: dict[str, str] = {}

    def name_of(run_id: str) -> str:
        if run_id not in names:
            try:
                names[run_id] = store.get(run_id).name
            except Exception:
                names[run_id] = run_id
        return names[run_id]

    out = []
    for run_id, p in manager.all_progress().items():
        ended = p.phase in TERMINAL_PHASES
        if ended and not include_ended:
            continue
        d = asdict(p) if is_dataclass(p) else dict(p)
        d["fraction"] = float(getattr(p, "fraction", 0.0) or 0.0)
        d["status"] = p.phase if (ended or p.phase == "queued") else "running"
        behind = manager.queued_behind(run_id) if p.phase == "queued" and hasattr(manager, "queued_behind") else []
        d["behind"] = name_of(behind[0]) if behind else None
        if behind and len(behind) > 1:
            d["behind"] += f" (+{len(behind) - 1} more)"
        d["fraction"], d["message"] = progress_line(d, d["status"], 0, p.epochs, behind=d["behind"])
        d["name"] = name_of(run_id)
        out.append(d)
    return out


# ---- dataset ----------------------------------------------------------------------------


def _cli_data() -> str:
    """`streamlit run dashboard.py -- --data PATH` (args after `--` reach sys.argv)."""
    argv = sys.argv[1:]
    for i, arg in enumerate(argv):
        if arg == "--data" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--data="):
            return arg.split("=", 1)[1]
    return ""


def data_setting() -> str:
    """The dataset for this session: set on the home page, or ?data=... in the URL, or
    `-- --data PATH` on the command line; "" means $MEDLEY_DATA / ~/mir_datasets/... / demo."""
    if DATA_KEY not in st.session_state:
        st.session_state[DATA_KEY] = st.query_params.get("data", "") or _cli_data()
    return st.session_state[DATA_KEY]


def set_data_setting(value: str) -> str | None:
    """Switch this session to another dataset ("" = default, "demo", "demo:tiny" or a folder).

    Returns None when switched, else the message saying why `value` is not a setting (the
    session keeps its dataset and the URL is left alone)."""
    value = value.strip()
    problem = data_problem(value)
    if problem is not None:
        return problem
    st.session_state[DATA_KEY] = value
    if value:
        st.query_params["data"] = value
    elif "data" in st.query_params:
        del st.query_params["data"]
    return None


def data_problem(data: str) -> str | None:
    """Why the setting `data` (or, when empty, $MEDLEY_DATA) names no dataset, or None when it
    is well-formed (a folder is only read later, by load_dataset_cached)."""
    try:
        demo_size(data)
    except EngineError as exc:
        source = "$MEDLEY_DATA" if not data else "the dataset setting"
        return f"{source} is not usable: {exc}"
    return None


def describe_data(data: str) -> str:
    """One line naming the dataset `data` resolves to, without reading it."""
    if data_problem(data) is not None:
        return "none (the dataset setting is not usable; fix it on the home page)"
    size = demo_size(data)
    if size is not None:
        return f"built-in demo ({size})"
    root = paths.resolve_data_root(data or None)
    return f"{'your own dataset' if root is not None and is_custom_layout(root) else 'Medley-solos-DB'} at {plain(root)}"


def dataset_ready(data: str) -> bool:
    """True when loading `data` needs no demo to be generated first (also when the setting is
    malformed: loading it then raises the DatasetError that pages show)."""
    if data_problem(data) is not None:
        return True
    size = demo_size(data)
    if size is None:
        return True
    if data in _dataset_cache():
        return True
    from engine.data.demo import demo_is_complete

    return demo_is_complete(paths.demo_root(size))


@st.cache_resource(show_spinner=False)
def _dataset_cache() -> dict:
    """data setting -> MedleyDataset, shared by all sessions of this server."""
    return {}


def load_dataset_cached(data: str):
    """The MedleyDataset for `data` (cached per server). Making the demo or checking the
    audio headers shows a progress bar. Raises engine.core.errors.DatasetError."""
    from engine.data.dataset import resolve_dataset

    cache = _dataset_cache()
    if data in cache:
        return cache[data]
    bar = st.empty()

    def progress(done: int, total: int, message: str) -> None:
        bar.progress(min(1.0, done / total) if total else 0.0, text=message)

    from ui import notices

    making_demo, started = not dataset_ready(data), notices.timer()
    with _DATA_LOCK:
        if data not in cache:
            cache[data] = resolve_dataset(data or None, progress=progress)
    bar.empty()
    if making_demo:  # shown once: at the top of the next run (callers rerun after a button), or by the caller
        ds = cache[data]
        notices.remember(demo_ready_message(len(ds.clips), len(getattr(ds, "program_view", None) or []),
                                            notices.timer() - started))
    return cache[data]


def demo_ready_message(clips: int, program_clips: int, seconds: float) -> str:
    """The note after the demo is made. Its progress bar counted every clip rendered ("of 1,315
    clips"), so this says the same total and where the clips went: 'Demo data ready: 1,315 clips
    rendered in 95 s: 1,120 in training, validation and test, and 195 in the cross-collection
    program view (songs played by instruments training never hears).'"""
    if not program_clips:
        return f"Demo data ready: {clips:,} clips in {seconds:.0f} s."
    return (f"Demo data ready: {clips + program_clips:,} clips rendered in {seconds:.0f} s: {clips:,} in "
            f"training, validation and test, and {program_clips:,} in the cross-collection program view "
            "(songs played by instruments training never hears; the Dataset page explains it).")


def forget_dataset(data: str) -> None:
    """Drop `data` from the dataset cache (re-read the folder next time)."""
    _dataset_cache().pop(data, None)


def require_dataset(data: str):
    """The dataset, or (precondition) an st.info with a "Make demo data" button and st.stop().
    Errors reading a real folder are shown with st.error, then st.stop()."""
    from engine.core.errors import EngineError

    if not dataset_ready(data):
        st.info(
            f"The dataset in use is the {describe_data(data)}, which has not been generated yet. "
            "Make it here (1-2 minutes on 2 cores, less with more), or point the dashboard at Medley-solos-DB "
            "on the home page."
        )
        if not st.button("Make demo data", type="primary", key="require_make_demo"):
            st.stop()
    try:
        ds = load_dataset_cached(data)
    except EngineError as exc:
        st.error(f"Cannot read the dataset: {plain(exc)}")
        st.stop()
    from ui import notices

    notices.show()  # "Demo data ready" when the button above just made it
    return ds


# ---- small helpers ----------------------------------------------------------------------


@st.cache_resource(show_spinner=False)
def compute_device() -> str:
    """'cuda (GPU name)' or 'cpu': where training runs by default."""
    import torch

    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return "cpu"


def fmt_pct(value: float | None) -> str:
    """0.734 -> '73.4%'; None -> '–'."""
    return "–" if value is None else f"{100 * value:.1f}%"


PERCENT_FORMAT = "{:.1%}"  # every rate in every table: one decimal ("73.4%")


def percent_style(frame, columns):
    """`frame` for st.dataframe with `columns` (rates in [0, 1]) shown as percentages with one
    decimal and missing values as '–' (a pandas Styler: the data stays numeric, so sorting,
    downloads and tests see the rates)."""
    shown = [c for c in columns if c in frame.columns]
    return frame.style.format(PERCENT_FORMAT, subset=shown, na_rep="–")


def run_label(record) -> str:
    """'name (id)' or the id when the name is the id."""
    return record.id if record.name == record.id else f"{record.name} ({record.id})"


def runs_in_url(key: str, labels: dict[str, str]) -> tuple[list[str], list[str]] | None:
    """Runs named by the URL's `key` parameter, read before its URL-bound widget is drawn:
    (run ids, values that name no run), or None when the URL has no `key`. `labels`: run id ->
    the widget's option text (what the binding writes to the URL); ids and old comma-separated
    links are read too (ui.compare.resolve_runs)."""
    from ui.compare import resolve_runs

    values = st.query_params.get_all(key)
    return resolve_runs(values, labels) if values else None


def csv_bytes(frame) -> bytes:
    """A DataFrame as CSV bytes for st.download_button (engine.runs.export.table_csv: text cells
    guarded against spreadsheet formulas, lists such as tags as plain "a,b", missing numbers empty)."""
    from engine.runs.export import table_csv

    return table_csv(frame.to_dict("records"), [str(c) for c in frame.columns])


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>#|~$])")  # characters that can open Markdown/LaTeX/HTML


def plain(text: object) -> str:
    """`text` (a run name, a file name, an error quoting one) made safe to put into Markdown
    (st.markdown, captions, headings, alerts, progress text): the characters that open markup
    (brackets, emphasis, code, HTML, headings, tables, strikethrough, LaTeX) are
    backslash-escaped and newlines become spaces, so it shows literally and never becomes a
    link, an image (which the browser would fetch), a colour directive or a heading."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(text)).replace("\n", " ")


# ---- sidebar ----------------------------------------------------------------------------


def render_sidebar() -> None:
    """Dataset in use, compute device, and the live list of running / queued jobs."""
    from ui import notices

    notices.show()  # e.g. "Demo data ready" after the button's rerun
    forget_progress_snapshot()  # a full page run: its sidebar and its page read the same fresh snapshot
    data = data_setting()
    with st.sidebar:
        _navigation()
        problem = data_problem(data)
        if problem is not None:
            st.error(plain(problem))
        st.caption(f"**Dataset:** {describe_data(data)}")
        st.caption(f"**Device:** {compute_device()}")
        address = _ray_address()
        if address is not None:
            st.caption(f"**Runs train on:** Ray at {plain(address)}")
        busy = _busy()
        # Adaptive refresh: each timer rerun costs the server ~0.1-0.2 s of CPU on these pages
        # (docs/PERFORMANCE.md), so poll often only while this server has jobs.
        mark_full_run("jobs")
        st.fragment(run_every=JOBS_EVERY_BUSY_S if busy else JOBS_EVERY_IDLE_S)(_jobs_panel)(busy)


# busy: the Train page's pace (ui.live.PROGRESS_EVERY_S), so that the sidebar and the page show the same stage
JOBS_EVERY_BUSY_S, JOBS_EVERY_IDLE_S = PROGRESS_EVERY_S, 15.0

# The sidebar's page list: (file relative to dashboard.py, label). Streamlit's own list names
# the home page after its file ("dashboard"), so it is hidden (.streamlit/config.toml:
# client.showSidebarNavigation) and this one is drawn instead.
NAVIGATION = (("dashboard.py", "Home"), ("pages/1_Dataset.py", "Dataset"), ("pages/2_Train.py", "Train"),
              ("pages/3_Compare.py", "Compare"), ("pages/4_Predict.py", "Predict"), ("pages/5_Search.py", "Search"))


def _navigation() -> None:
    """Links to every page, the home page named "Home". A script run whose entry point is not
    dashboard.py (a page file run alone, as AppTest does) has no such pages: no links then."""
    from streamlit.errors import StreamlitPageNotFoundError
    try:
        for path, label in NAVIGATION:
            st.page_link(path, label=label)
    except StreamlitPageNotFoundError:
        return
    st.divider()


def _ray_address() -> str | None:
    """The Ray address this server's runs train at; None when local or the manager is
    unavailable (a damaged store: the page says so itself)."""
    try:
        manager = get_manager()
    except Exception:
        return None
    return manager.ray_options.address if manager.backend == "ray" else None


def _busy() -> bool:
    """True while this server's job manager has queued or running runs."""
    try:
        return bool(get_manager().active())
    except Exception:
        return False


def mark_full_run(name: str) -> None:
    """Note, just before a fragment is called in a full script run, that this call is part of one
    (see `in_full_run`)."""
    st.session_state[f"_full_run:{name}"] = True


def in_full_run(name: str) -> bool:
    """Inside fragment `name`: True when it runs as part of a full script run (mark_full_run was
    called just before), False when it reruns alone on its timer. A fragment that reruns the whole
    page on a change must do so only on its timer: in a full run the change is already being shown,
    and a rerun there would cut the run short before the widgets below it read their clicks (a
    button pressed while a run ended did nothing)."""
    return bool(st.session_state.pop(f"_full_run:{name}", False))


def _jobs_panel(busy: bool) -> None:
    if not in_full_run("jobs") and _busy() != busy:  # a job started or the last one ended: rerun the page
        st.rerun()
    try:
        jobs = job_progress()
    except EngineError as exc:  # a damaged run store: the same message as on the pages
        st.error(f"The run store cannot be read: {plain(exc)}")
        return
    except Exception as exc:  # the engine's job manager not importable / broken: say so, keep the page
        st.caption(f"Jobs unavailable: {exc}")
        return
    ours = {j["run_id"] for j in jobs}
    try:
        store = _open_store()
        if time.monotonic() - _last_owners_check[0] >= OWNERS_CHECK_EVERY_S:
            store.mark_interrupted()
            _last_owners_check[0] = time.monotonic()
        elsewhere = [r for r in store.list_runs(status="running") if r.id not in ours]
    except EngineError as exc:
        st.caption(f"Runs unavailable: {exc}")
        return
    if elsewhere:  # trained by another process: the CLI, or another server on this cache
        st.caption("Running in another process: " + ", ".join(
            f"{plain(r.name)} (epoch {r.epochs_done}/{r.config.train.epochs})" for r in elsewhere[:5]))
    if not jobs:
        if not elsewhere:
            st.caption("No training running.")
        return
    running = [j for j in jobs if j.get("status") == "running"]
    queued = [j for j in jobs if j.get("status") != "running"]
    st.markdown(f"**Jobs:** {len(running)} running, {len(queued)} queued")
    manager = get_manager()
    for job in running:
        text, cancel = st.columns([5, 1], vertical_alignment="bottom")
        text.progress(min(1.0, max(0.0, job["fraction"])), text=f"{plain(job['name'])}: {job['message']}")
        if cancel.button(":material/close:", key=f"sidebar_cancel_{job['run_id']}", help=f"Cancel {job['name']}"):
            manager.cancel(job["run_id"])
            forget_progress_snapshot()
            st.rerun(scope="fragment")
    if queued:
        names = [j["name"] for j in queued]
        more = f" and {len(names) - 5} more" if len(names) > 5 else ""
        st.caption("Queued: " + ", ".join(plain(n) for n in names[:5]) + more)
        if st.button("Cancel queued runs", key="sidebar_cancel_queued"):
            for job in queued:
                manager.cancel(job["run_id"])
            forget_progress_snapshot()
            st.rerun(scope="fragment")
