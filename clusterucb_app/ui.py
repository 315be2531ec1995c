"""Shared page furniture: workspace sidebar, headers, explanations, errors, job progress.

Everything a page computes lives in the workspace on disk; `st.session_state` only remembers
which workspace is open (and mirrors it into the URL, `?ws=NAME`, so a refresh, a new tab or a
server restart reopens the same one).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import streamlit as st
from streamlit.runtime.scriptrunner_utils.exceptions import RerunException, StopException

from clusterucb_core import config
from clusterucb_core.runtime import jobs
from clusterucb_core.workspace import Workspace, check_name

log = logging.getLogger("clusterucb_app")

ROOT = Path(__file__).resolve().parent.parent
DEMO_NAME = "demo"
DEMO_SOURCE = config.DEMO_DIR / "demo_workspace"  # the checkout's, or the installed demo
WS_KEY = "ws_name"


def workspaces_root() -> Path:
    """Folder holding one sub-folder per workspace (env CLUSTERUCB_WORKSPACES overrides):
    the checkout's workspaces/, or ./workspaces for an installed package."""
    default = ROOT / "workspaces" if (ROOT / "pyproject.toml").is_file() else \
        Path.cwd() / "workspaces"
    root = Path(os.environ.get("CLUSTERUCB_WORKSPACES", default)).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def list_workspaces() -> list[str]:
    root = workspaces_root()
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and (p / "workspace.json").exists())


def ensure_demo() -> Workspace:
    """The demo workspace: a copy of the bundled prebuilt one, or a fresh one set to the demo."""
    target = workspaces_root() / DEMO_NAME
    if not (target / "workspace.json").exists() and DEMO_SOURCE.is_dir():
        tmp = target.with_name(f".{DEMO_NAME}.copying")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(DEMO_SOURCE, tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    ws = Workspace.open(target)
    from . import state

    state.apply_demo_defaults(ws)
    return ws


def open_workspace(name: str) -> Workspace:
    check_name(name, "workspace name")
    if name == DEMO_NAME:
        return ensure_demo()
    return Workspace.open(workspaces_root() / name)


def _choose_name() -> str:
    """Which workspace this browser session shows: session > URL > the demo. A name that is
    not a workspace (yet) is never created by opening a URL: the demo opens, and says so."""
    name = st.session_state.get(WS_KEY)
    if not name:
        name = st.query_params.get("ws") or DEMO_NAME
    try:
        check_name(name, "workspace name")
    except ValueError:
        st.session_state["_ws_warning"] = (
            f"'{name}' is not a valid workspace name; opened the demo."
        )
        return DEMO_NAME
    if name != DEMO_NAME and name not in list_workspaces():
        st.session_state["_ws_warning"] = (
            f"There is no workspace named '{name}' in `{workspaces_root()}`; opened the demo. "
            "Make it with **New workspace** below if you meant a new one."
        )
        return DEMO_NAME
    return name


def _switch(name: str, message: str | None = None) -> None:
    """Open workspace `name` in this session: state, URL and picker agree."""
    st.session_state[WS_KEY] = name
    st.session_state.pop("_ucb_runs", None)
    if message:
        st.session_state["_ws_toast"] = message


def _create() -> None:
    new = str(st.session_state.get("ws_new_name") or "").strip()
    try:
        check_name(new, "workspace name")
        if (workspaces_root() / new).exists():
            raise ValueError(f"a workspace named '{new}' already exists; pick it in the list "
                             "above")
        ws = open_workspace(new)
    except (ValueError, OSError) as exc:
        st.session_state["_ws_error"] = str(exc)
        return
    st.session_state["ws_new_name"] = ""
    _switch(new, f"Created workspace '{new}' (`{ws.root}`) and opened it. Start with the Pool.")


def sidebar() -> Workspace:
    """Render the workspace picker in the sidebar and return the open workspace."""
    name = _choose_name()
    try:
        ws = open_workspace(name)
    except (OSError, ValueError) as exc:
        st.session_state["_ws_warning"] = (
            f"Could not open workspace '{name}': {exc}. Opened the demo."
        )
        name = DEMO_NAME
        ws = open_workspace(name)
    st.session_state[WS_KEY] = name
    if st.query_params.get("ws") != name:
        st.query_params["ws"] = name

    with st.sidebar:
        st.markdown("### Workspace")
        names = sorted(set(list_workspaces()) | {name})
        # keyed by the open workspace: a fresh widget after every switch, so a stale choice
        # left in the browser can never switch back
        choice = st.selectbox("Open workspace", names, index=names.index(name),
                              key=f"ws_picker_{name}",
                              help="A workspace folder holds a project's whole state: pool, "
                                   "target, checkpoints, features, clusters, runs, exports.")
        if choice != name:
            _switch(choice)
            st.rerun()
        with st.popover("New workspace", width="stretch"):
            st.text_input("Name", key="ws_new_name", placeholder="letters, digits, . _ -")
            st.button("Create", key="ws_create", on_click=_create)
            if err := st.session_state.pop("_ws_error", None):
                st.error(err)
        st.caption(f"Folder: `{ws.root}`")
        if warning := st.session_state.pop("_ws_warning", None):
            st.warning(warning)
        if msg := st.session_state.pop("_ws_toast", None):
            st.success(msg)
            st.toast(msg, icon=":material/create_new_folder:")
        _sidebar_status(ws)
    return ws


def _sidebar_status(ws: Workspace) -> None:
    """The steps done and the jobs running; while a job runs it refreshes itself (a
    fragment), so its percentage follows the job's panel and a step is ticked when it ends."""
    running = [j for j in jobs.list_jobs(ws) if j.active]

    @st.fragment(run_every=1.0 if running else None)
    def _status() -> None:
        from . import state

        now = [j for j in jobs.list_jobs(ws) if j.active]
        st.markdown("### Progress")
        for label, ok in state.progress_summary(ws, [j.kind for j in now]):
            icon = ":material/check_circle:" if ok else ":material/radio_button_unchecked:"
            st.markdown(f"{icon} {label}")
        for job in now:
            frac = job.fraction
            stage = job.extra.get("stage")  # a job of several stages counts each anew
            st.caption(f":material/hourglass_top: {job.title or job.kind}: "
                       + (f"{frac:.0%}" if frac is not None else job.status)
                       + (f" ({job.done:,.0f} / {job.total:,.0f} {job.unit or 'rows'}"
                          + (f", {plain(stage)}" if stage else "") + ")" if job.total else ""))
        if bool(now) != bool(running):
            st.rerun(scope="app")  # a job started or ended: start or stop the refresh

    _status()


def workspace() -> Workspace:
    """The open workspace (pages call this; streamlit_app.py's sidebar has chosen it)."""
    name = st.session_state.get(WS_KEY) or _choose_name()
    return open_workspace(name)


# ---------------------------------------------------------------------------------------------
# text furniture
# ---------------------------------------------------------------------------------------------

def header(title: str, lead: str, explanation: str | None = None) -> None:
    st.title(title)
    st.markdown(lead)
    if explanation:
        with st.expander("What is this step?", expanded=False):
            st.markdown(explanation)


def need(ok: bool, message: str, page: str | None = None) -> bool:
    """Show what to do first when a prerequisite is missing; returns `ok`."""
    if not ok:
        st.info(message)
        if page:
            st.page_link(
                page,
                label=f"Go to {Path(page).stem.split('_', 1)[-1].replace('_', ' ').title()}",
                icon=":material/arrow_forward:",
            )
    return ok


def show_error(exc: BaseException, action: str, hint: str | None = None) -> None:
    """A user-facing error: what failed, the engine's message, what to do. No traceback."""
    log.exception("%s failed", action)
    msg = str(exc) or type(exc).__name__
    text = f"**{action} failed.** {msg}"
    if hint:
        text += f"\n\n**What to do:** {hint}"
    st.error(text)


@contextlib.contextmanager
def guard(action: str, hint: str | None = None) -> Iterator[None]:
    """Run a block; an exception becomes a readable st.error and the page carries on."""
    try:
        yield
    except (StopException, RerunException):
        raise
    except Exception as exc:  # noqa: BLE001 - every user-caused error gets a message
        show_error(exc, action, hint)


_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\*_`[]<>#|~$"})


def plain(text: str) -> str:
    """Text from the engine shown through Markdown (st.info, st.caption) without being
    formatted: 'mean + 1*std' must not turn into italics."""
    return str(text).translate(_MD_SPECIAL)


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min {seconds % 60:.0f} s"
    return f"{seconds // 3600:.0f} h {(seconds % 3600) // 60:.0f} min"


# ---------------------------------------------------------------------------------------------
# background jobs
# ---------------------------------------------------------------------------------------------

def job_panel(ws: Workspace, kind: str, *, key: str | None = None,
              on_done: Callable[[jobs.JobState], None] | None = None,
              poll_s: float = 1.0) -> jobs.JobState | None:
    """Progress of the latest job of `kind`: bar, rate, ETA, cancel / resume, log.

    While the job runs the panel refreshes itself (a fragment), and reruns the whole page once
    when the job ends so the page shows its results.
    """
    key = key or f"job_{kind}"
    state = jobs.latest(ws, kind)
    if state is None:
        return None

    run_every = poll_s if state.active else None

    @st.fragment(run_every=run_every)
    def _panel() -> None:
        cur = jobs.status(ws, state.job_id)
        _render_job(ws, cur, key)
        if state.active and not cur.active:
            if on_done is not None:
                on_done(cur)
            st.rerun(scope="app")

    _panel()
    return state


def _render_job(ws: Workspace, cur: jobs.JobState, key: str) -> None:
    title = cur.title or cur.kind
    unit = cur.unit or "rows"
    frac = cur.fraction
    stage = cur.extra.get("stage")
    box = st.container(border=True)
    with box:
        if cur.active:
            if not cur.total:  # nothing counted yet: say what it is doing
                text = f"**{title}** · {plain(cur.message or 'starting')}…"
            else:
                text = (f"**{title}** · {plain(stage or 'running')}: {cur.done:,.0f} / "
                        f"{cur.total:,.0f} {unit}")
            st.progress(frac or 0.0, text=text)
            cols = st.columns(4)
            cols[0].metric(f"{unit}/s", f"{cur.rate:,.1f}" if cur.rate else "-")
            cols[1].metric("ETA", fmt_duration(cur.eta_s))
            cols[2].metric("Elapsed", fmt_duration(cur.elapsed_s))
            if cols[3].button("Cancel", key=f"{key}_cancel", type="secondary",
                              help="Stop the job. Work already written is kept; Resume "
                                   "carries on from it."):
                jobs.cancel(ws, cur.job_id)
                st.rerun(scope="app")
            if cur.message:
                st.caption(cur.message)
        elif cur.status == jobs.DONE:
            st.success(f"**{title}** finished in {fmt_duration(cur.elapsed_s)}"
                       + (f" — {cur.message}" if cur.message and cur.message != "finished" else ""))
        else:
            label = {jobs.CRASHED: "stopped unexpectedly", jobs.CANCELLED: "was cancelled",
                     jobs.ERROR: "failed"}.get(cur.status, cur.status)
            where = (f" at {cur.done:,.0f}" + (f" / {cur.total:,.0f}" if cur.total else "")
                     + f" {unit}") if cur.done else ""
            st.warning(f"**{title}** {label}{where}. {cur.error or ''}\n\n"
                       "Resume carries on from the work already saved.")
            if st.button("Resume", key=f"{key}_resume", type="primary"):
                try:
                    jobs.resume(ws, cur.job_id)
                except ValueError as exc:
                    st.error(str(exc))
                st.rerun(scope="app")
        with st.expander("Job log", expanded=False):
            st.code(cur.log_tail() or "(empty)", language=None)


def busy(ws: Workspace) -> str | None:
    """Why a job button is off right now: the job that runs (one at a time, since every
    stage shares the model, the CPU and the workspace's files), or None."""
    now = [j for j in jobs.list_jobs(ws) if j.active]
    if not now:
        return None
    return f"Wait for {now[0].title or now[0].kind} to finish (one job at a time)."


def start_job(ws: Workspace, kind: str, **kwargs: Any) -> None:
    """Start a job from a button, then rerun the page (so the sidebar follows the job and
    the other job buttons wait); errors (e.g. one already running) become messages."""
    try:
        jobs.start(ws, kind, **kwargs)
    except (ValueError, TypeError, OSError) as exc:
        show_error(exc, f"Starting {kwargs.get('title') or kind}")
        return
    time.sleep(0.2)  # let the child write its first progress before the page redraws
    st.rerun()


# ---------------------------------------------------------------------------------------------
# showing samples (always as text, never as HTML)
# ---------------------------------------------------------------------------------------------

def chat_text(messages: Any) -> str:
    """A chat as plain text: one block per turn, headed by its role."""
    if not isinstance(messages, (list, tuple)):
        return str(messages)
    parts = []
    for m in messages:
        if isinstance(m, dict):
            parts.append(f"[{m.get('role', '?')}]\n{m.get('content', '')}")
        else:
            parts.append(str(m))
    return "\n\n".join(parts)


def first_turn(messages: Any, role: str = "user", n: int = 160) -> str:
    if isinstance(messages, (list, tuple)):
        for m in messages:
            if isinstance(m, dict) and m.get("role") == role:
                text = " ".join(str(m.get("content", "")).split())
                return text if len(text) <= n else text[: n - 1] + "…"
    return ""


def show_text(text: str, height: int | None = None) -> None:
    """Sample text, verbatim and wrapped, in a code box (no Markdown, no HTML)."""
    st.code(text, language=None, wrap_lines=True, height=height if height else "content")


def table_height(n_rows: int, max_rows: int = 12) -> int:
    """Pixel height of a st.dataframe showing `n_rows` rows (at most `max_rows`) with no
    padding of empty rows below them."""
    return 35 * (min(max(int(n_rows), 1), max_rows) + 1) + 3


class RowHover:
    """Map hover text per row, made only for the points shown: row, cluster, source, score
    and the prompt's beginning, the pool's rows read one at a time. Plotly renders hover text
    as HTML: user text is escaped."""

    def __init__(self, pool: Any = None, *, scores: Any = None, labels: Any = None,
                 names: dict[int, str] | None = None, status: Any = None):
        self.pool, self.scores, self.labels = pool, scores, labels
        self.names, self.status = names or {}, status

    def __getitem__(self, i: int) -> str:
        from clusterucb_app.plots import escape

        i = int(i)
        head = f"row {i}"
        if self.labels is not None:
            lab = int(self.labels[i])
            head += f" · {escape(self.names.get(lab, str(lab)))}"
        parts = [head]
        if self.scores is not None:
            s = float(self.scores[i])
            parts.append(f"score {s:.4g}" if s == s else "score: not scored")
        if self.status is not None and self.status[i]:
            parts.append(f"<b>{escape(self.status[i])}</b>")
        if self.pool is not None:
            rec = self.pool.row(i)
            parts.append(f"id {escape(rec['id'])} · {escape(rec['source'])}")
            parts.append(escape(first_turn(rec["messages"], n=90)))
        return "<br>".join(parts)


def preview_frame(table: Any, rows: Any = None, extra: dict[str, Any] | None = None) -> Any:
    """A readable preview of pool rows: id, source, the question and answer beginnings."""
    import pandas as pd

    sub = table if rows is None else table.iloc[list(rows)]
    out = pd.DataFrame({
        "row": sub["row"].to_numpy(),
        "id": sub["id"].astype(str).to_numpy(),
        "source": sub["source"].astype(str).to_numpy(),
        "prompt": [first_turn(m, "user") for m in sub["messages"]],
        "answer": [first_turn(m, "assistant") for m in sub["messages"]],
    })
    for name, values in (extra or {}).items():
        out[name] = list(values)
    return out
