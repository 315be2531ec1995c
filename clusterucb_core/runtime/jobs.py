"""Long work in a separate process, with a progress file a page (or anyone) can read.

Warm-up, feature extraction, exhaustive scoring, clustering and the UMAP map take minutes to
hours. They run here in a child process of their own (own process group, so a cancel stops
the whole tree, `torchrun` workers included) while the app only reads a small JSON file:

    W/jobs/<job_id>/spec.json       what to run: an engine function "module:function" + kwargs
    W/jobs/<job_id>/progress.json   status, done, total, rate (rows/s), eta_s, message, pid,
                                    started, finished, error, attempt  (written atomically)
    W/jobs/<job_id>/log.txt         the child's stdout and stderr (the full traceback on error)

A browser refresh re-attaches by reading the file. A job whose process vanished while the file
still says "running" (killed, machine rebooted) reads as "crashed"; `resume()` starts it again
in the same folder, and the engine's stores carry on from the rows already done.

Inside a job, engine code reports through the callback it was handed (`progress=`), or through
`progress.report(None, ...)` from anywhere in the process: the job installs its callback as
the process's current one (`progress.set_current`). Never imports streamlit.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clusterucb_core.runtime import atomic
from clusterucb_core.runtime.progress import set_current
from clusterucb_core.workspace import Workspace, check_name

SPEC = "spec.json"
PROGRESS = "progress.json"
LOG = "log.txt"
PIDFILE = "pid"

RUNNING = "running"
DONE = "done"
ERROR = "error"
CANCELLED = "cancelled"
CRASHED = "crashed"
QUEUED = "starting"
FINAL = {DONE, ERROR, CANCELLED}


class Cancelled(Exception):
    """Raised inside a job when it is asked to stop (SIGTERM)."""


def _now() -> float:
    return time.time()


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, tz=UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------
# reading state
# ---------------------------------------------------------------------------------------------

@dataclass
class JobState:
    """One job as its progress file says, with a crash check against the live process table."""

    job_id: str
    kind: str
    status: str
    done: float = 0
    total: float | None = None
    rate: float | None = None  # units per second (rows/s for feature work)
    eta_s: float | None = None
    message: str = ""
    unit: str = "rows"
    pid: int | None = None
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    attempt: int = 1
    title: str = ""
    path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def fraction(self) -> float | None:
        if not self.total:
            return None
        return max(0.0, min(1.0, float(self.done) / float(self.total)))

    @property
    def active(self) -> bool:
        return self.status in (RUNNING, QUEUED)

    @property
    def elapsed_s(self) -> float | None:
        if self.started is None:
            return None
        return (self.finished or _now()) - self.started

    def log_tail(self, n_chars: int = 4000) -> str:
        if self.path is None:
            return ""
        log = self.path / LOG
        if not log.exists():
            return ""
        with open(log, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - n_chars))
            return fh.read().decode("utf-8", errors="replace")


def _pid_alive(pid: int | None) -> bool:
    """True when `pid` is a live (not zombie) process. Reaps our own finished children."""
    if not pid:
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        done_pid, _ = os.waitpid(pid, os.WNOHANG)
        if done_pid == pid:
            _CHILDREN.pop(pid, None)
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError):
        text = stat.read_text()
        state = text.rsplit(")", 1)[1].split()[0]
        if state in ("Z", "X"):
            return False
    return True


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def reap() -> None:
    """Collect the exit status of every finished job this process started, so none stays a
    <defunct> zombie under a long-lived server (status() calls it)."""
    for pid, proc in list(_CHILDREN.items()):
        if proc.poll() is not None:
            _CHILDREN.pop(pid, None)


def status(ws: Workspace, job_id: str) -> JobState:
    """The job's state; "crashed" when the file says running but its process is gone."""
    reap()
    path = ws.jobs(job_id)
    spec = _read_json(path / SPEC) or {}
    prog = _read_json(path / PROGRESS)
    if prog is None:
        if not path.exists():
            raise FileNotFoundError(f"no job {job_id!r} in workspace {ws.name}")
        prog = {"status": QUEUED}
    known = {"status", "done", "total", "rate", "eta_s", "message", "unit", "pid", "started",
             "finished", "error", "attempt"}
    state = JobState(job_id=job_id, kind=spec.get("kind", ""), title=spec.get("title", ""),
                     path=path, **{k: v for k, v in prog.items() if k in known})
    state.extra = {k: v for k, v in prog.items() if k not in known}
    if state.pid is None:
        with contextlib.suppress(OSError, ValueError):
            state.pid = int((path / PIDFILE).read_text())
    if state.status in (RUNNING, QUEUED) and not _pid_alive(state.pid):
        # a starting job gets a few seconds before its missing process counts as a crash
        if state.status == RUNNING or (_now() - float(state.started or 0)) > 30:
            state.status = CRASHED
            state.error = state.error or ("the job's process stopped without finishing "
                                          "(killed, out of memory, or the machine restarted)")
    return state


def list_jobs(ws: Workspace, kind: str | None = None) -> list[JobState]:
    """Every job in the workspace, newest first (optionally only one kind)."""
    out = []
    for job_id in ws.list("jobs"):
        try:
            st = status(ws, job_id)
        except (FileNotFoundError, ValueError):
            continue
        if kind is None or st.kind == kind:
            out.append(st)
    spec_time = {s.job_id: float((_read_json(ws.jobs(s.job_id) / SPEC) or {}).get("created", 0))
                 for s in out}
    return sorted(out, key=lambda s: spec_time[s.job_id], reverse=True)


def latest(ws: Workspace, kind: str) -> JobState | None:
    jobs = list_jobs(ws, kind)
    return jobs[0] if jobs else None


def active(ws: Workspace, kind: str | None = None) -> list[JobState]:
    return [j for j in list_jobs(ws, kind) if j.active]


# ---------------------------------------------------------------------------------------------
# starting, cancelling, resuming
# ---------------------------------------------------------------------------------------------

def new_job_id(kind: str) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return check_name(f"{kind}-{stamp}-{secrets.token_hex(2)}", "job id")


def start(ws: Workspace, kind: str, *, target: str | None = None,
          kwargs: dict[str, Any] | None = None, title: str = "", unit: str = "rows",
          job_id: str | None = None, env: dict[str, str] | None = None) -> str:
    """Start a job in its own process and return its id (the folder name under W/jobs/).

    `target="package.module:function"` with JSON-able `kwargs`: the function is called with
    `progress=` when it takes one.
    Refuses to start a second job of the same kind in the same workspace while one runs.
    """
    if not target:
        raise ValueError("a job needs a target 'package.module:function'")
    check_name(kind, "job kind")
    for other in active(ws, kind):
        raise ValueError(f"a {kind} job is already running ({other.job_id}); wait for it or "
                         "cancel it first")
    job_id = job_id or new_job_id(kind)
    path = ws.jobs(job_id)
    path.mkdir(parents=True, exist_ok=False)
    spec = {"kind": kind, "title": title or kind, "target": target, "kwargs": kwargs or {},
            "unit": unit, "workspace": str(ws.root), "created": _now(),
            "env": env or {}}
    json.dumps(spec)  # fail here, not in the child, when kwargs are not JSON-able
    atomic.write_json(path / SPEC, spec)
    _launch(ws, job_id, attempt=1)
    return job_id


def _launch(ws: Workspace, job_id: str, attempt: int) -> int:
    path = ws.jobs(job_id)
    spec = _read_json(path / SPEC) or {}
    atomic.write_json(path / PROGRESS, {"status": QUEUED, "done": 0, "total": None,
                                        "message": "starting", "attempt": attempt,
                                        "unit": spec.get("unit", "rows"),
                                        "started": _now(), "pid": None})
    env = dict(os.environ)
    env.update(spec.get("env") or {})
    env["PYTHONUNBUFFERED"] = "1"
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with open(path / LOG, "ab") as log:
        log.write(f"\n=== attempt {attempt} at {_iso(_now())} ===\n".encode())
        log.flush()
        proc = subprocess.Popen(
            [sys.executable, "-m", "clusterucb_core.runtime.jobs", str(path), str(attempt)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            cwd=os.getcwd(), start_new_session=True)
    # The child writes its pid into progress.json as soon as it runs; keep it in a file of our
    # own too, so a child that dies before its first write reads as crashed, not as starting.
    atomic.write_text(path / PIDFILE, str(proc.pid))
    _CHILDREN[proc.pid] = proc
    return proc.pid


_CHILDREN: dict[int, subprocess.Popen] = {}


def cancel(ws: Workspace, job_id: str, grace_s: float = 5.0) -> JobState:
    """Stop a job: SIGTERM to its process group, SIGKILL after `grace_s`; status cancelled.

    Work already written by the engine (done rows of a feature store, finished checkpoints)
    stays; resuming the job carries on from it.
    """
    state = status(ws, job_id)
    if state.status in FINAL:
        return state
    pid = state.pid
    if pid and _pid_alive(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        deadline = _now() + grace_s
        while _now() < deadline and _pid_alive(pid):
            time.sleep(0.05)
        if _pid_alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            deadline = _now() + 2
            while _now() < deadline and _pid_alive(pid):
                time.sleep(0.05)
    prog = _read_json(ws.jobs(job_id) / PROGRESS) or {}
    if prog.get("status") not in FINAL:
        prog.update(status=CANCELLED, finished=_now(), message="cancelled by the user",
                    eta_s=None)
        atomic.write_json(ws.jobs(job_id) / PROGRESS, prog)
    _CHILDREN.pop(pid or -1, None)
    return status(ws, job_id)


def resume(ws: Workspace, job_id: str) -> JobState:
    """Run a crashed, cancelled or failed job again in the same folder (same spec).

    The engine resumes from what it already wrote (feature stores keep a done-bitmap).
    """
    state = status(ws, job_id)
    if state.active:
        raise ValueError(f"job {job_id} is still running")
    for other in active(ws, state.kind):
        raise ValueError(f"a {state.kind} job is already running ({other.job_id})")
    _launch(ws, job_id, attempt=int(state.attempt or 1) + 1)
    return status(ws, job_id)


def wait(ws: Workspace, job_id: str, timeout_s: float = 600, poll_s: float = 0.1) -> JobState:
    """Block until the job is no longer running (for the CLI and tests)."""
    deadline = _now() + timeout_s
    while True:
        state = status(ws, job_id)
        if not state.active or _now() > deadline:
            return state
        time.sleep(poll_s)


# ---------------------------------------------------------------------------------------------
# inside the job process
# ---------------------------------------------------------------------------------------------

class Progress:
    """The callback a job hands to engine code; writes progress.json (throttled, atomic).

    Call it as `progress(done, total)`, `progress(done, total, "message")`,
    `progress(done=..., total=..., message=..., **extra)` or with one dict. `done`/`total`
    are in the job's unit (rows for feature work, steps for warm-up). The rate is measured
    from the first report of this attempt, so a resumed job shows its own speed.
    """

    def __init__(self, path: Path | None, attempt: int = 1, unit: str = "rows",
                 min_interval_s: float = 0.2, echo: bool = False):
        self.path = path
        self.state: dict[str, Any] = {"status": RUNNING, "done": 0, "total": None,
                                      "message": "", "unit": unit, "pid": os.getpid(),
                                      "started": _now(), "finished": None, "error": None,
                                      "attempt": attempt, "rate": None, "eta_s": None}
        self.min_interval_s = min_interval_s
        self.echo = echo
        self._last_write = 0.0
        self._base: tuple[float, float] | None = None  # (time, done) of the first report
        self._stage: str | None = None
        self.flush()

    explicit = False  # set once engine code reports directly

    def __call__(self, done: Any = None, total: Any = None, message: Any = None,
                 **extra: Any) -> None:
        self.explicit = True
        self._update(done, total, message, extra)

    def _update(self, done: Any, total: Any, message: Any, extra: dict[str, Any]) -> None:
        if isinstance(done, dict):
            extra = {**done, **extra}
            done = extra.pop("done", None)
            total = extra.pop("total", total)
            message = extra.pop("message", message)
        stage = extra.pop("stage", None)
        if stage is not None and stage != self._stage:
            self._stage = stage
            self._base = None  # a new stage (e.g. epochs -> saving) measures its own rate
            self.state["stage"] = stage
        if total is not None:
            self.state["total"] = float(total)
        if done is not None:
            done = float(done)
            now = _now()
            if self._base is None or done < self._base[1]:
                self._base = (now, done)
            self.state["done"] = done
            dt = now - self._base[0]
            if dt > 0.5 and done > self._base[1]:
                rate = (done - self._base[1]) / dt
                self.state["rate"] = rate
                tot = self.state.get("total")
                self.state["eta_s"] = (max(0.0, tot - done) / rate) if tot else None
        if message is not None:
            self.state["message"] = str(message)
        for key, value in extra.items():
            with contextlib.suppress(TypeError, ValueError):
                json.dumps(value)
                self.state[key] = value
        self.flush(force=False)

    def flush(self, force: bool = True) -> None:
        now = _now()
        if not force and now - self._last_write < self.min_interval_s:
            return
        self._last_write = now
        if self.echo:
            tot = self.state.get("total")
            print(f"[progress] {self.state.get('done')}/{tot} {self.state.get('message', '')}",
                  file=sys.stderr, flush=True)
        if self.path is not None:
            atomic.write_json(self.path / PROGRESS, self.state)

    def finish(self, status_: str, error: str | None = None, message: str | None = None) -> None:
        self.state.update(status=status_, finished=_now(), eta_s=None)
        if error is not None:
            self.state["error"] = error
        if message is not None:
            self.state["message"] = message
        if status_ == DONE and self.state.get("total"):
            self.state["done"] = self.state["total"]
        self.flush()


def resolve(target: str) -> Callable[..., Any]:
    module_name, _, func_name = target.partition(":")
    if not module_name or not func_name:
        raise ValueError(f"job target {target!r} is not 'package.module:function'")
    func = importlib.import_module(module_name)
    for part in func_name.split("."):
        func = getattr(func, part)
    return func  # type: ignore[return-value]


def _accepts(func: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


_FRACTION = re.compile(r"(\d[\d,]*)\s*/\s*(\d[\d,]*)")


class _ProgressTee(io.TextIOBase):
    """Stream wrapper for CLI jobs: passes text through to the log and reads `done/total`
    from progress lines ("rows 1200/3000 ...", carriage-return bars included), so a command
    that only prints progress still drives the progress file. Explicit `report()` calls win.
    """

    def __init__(self, inner: Any, progress: Progress):
        self.inner = inner
        self.progress = progress
        self._buf = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.inner.write(text)
        self._buf += text
        *parts, self._buf = re.split(r"[\r\n]", self._buf)
        if len(self._buf) > 4096:
            self._buf = self._buf[-4096:]
        for part in parts:
            self._scan(part)
        return len(text)

    def flush(self) -> None:
        self.inner.flush()

    def _scan(self, line: str) -> None:
        if self.progress.explicit:
            return
        matches = _FRACTION.findall(line)
        if not matches:
            return
        done, total = (int(x.replace(",", "")) for x in matches[-1])
        if total > 0 and done <= total:
            self.progress._update(done, total, line.strip()[:200], {})


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Cancelled("cancelled")


def run_in_process(path: Path, attempt: int = 1) -> int:
    """Body of the job process: run the spec, keep progress.json up to date, return exit code."""
    spec = json.loads((path / SPEC).read_text())
    progress = Progress(path, attempt=attempt, unit=spec.get("unit", "rows"))
    set_current(progress)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        sys.stdout = _ProgressTee(sys.stdout, progress)  # type: ignore[assignment]
        sys.stderr = _ProgressTee(sys.stderr, progress)  # type: ignore[assignment]
        func = resolve(spec["target"])
        kwargs = dict(spec.get("kwargs") or {})
        if _accepts(func, "progress"):
            kwargs["progress"] = progress
        result = func(**kwargs)
        if result is not None:
            with contextlib.suppress(TypeError, ValueError):
                json.dumps(result, default=str)
                progress.state["result"] = json.loads(json.dumps(result, default=str))
        progress.finish(DONE, message=progress.state.get("message") or "finished")
        return 0
    except (Cancelled, KeyboardInterrupt):
        progress.finish(CANCELLED, message="cancelled by the user")
        return 130
    except SystemExit as exc:  # a target that exits (sys.exit) ends the job with its code
        code = exc.code if isinstance(exc.code, int) else 2
        if code == 0:
            progress.finish(DONE, message="finished")
            return 0
        progress.finish(ERROR, error=f"the command stopped (exit code {code}); see the job log")
        return code
    except BaseException as exc:  # noqa: BLE001 - the job must record any failure
        traceback.print_exc()
        progress.finish(ERROR, error=f"{type(exc).__name__}: {exc}")
        return 1
    finally:
        set_current(None)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print("usage: python -m clusterucb_core.runtime.jobs JOB_DIR [ATTEMPT]", file=sys.stderr)
        return 2
    attempt = int(argv[1]) if len(argv) > 1 else 1
    return run_in_process(Path(argv[0]), attempt)


if __name__ == "__main__":
    sys.exit(main())
