"""Background jobs: progress file, cancel, crash detection, resume (no streamlit involved)."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from clusterucb_core.runtime import jobs, progress
from clusterucb_core.workspace import Workspace


@pytest.fixture()
def ws(tmp_path):
    return Workspace.open(tmp_path / "ws")


def _wait_for(pred, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def test_job_runs_to_done_and_writes_progress(ws):
    job_id = jobs.start(ws, "demo", target="tests.job_tasks:demo_task",
                        kwargs={"total": 8, "delay_s": 0.01}, title="count")
    state = jobs.wait(ws, job_id, timeout_s=60)
    assert state.status == jobs.DONE, state.log_tail()
    assert state.done == state.total == 8
    assert state.fraction == 1.0
    assert state.finished is not None and state.started is not None
    assert state.extra["result"] == {"counted": 8, "resumed_from": 0}
    assert state.title == "count" and state.kind == "demo"
    # the file on disk is plain JSON with the documented keys
    raw = json.loads((ws.jobs(job_id) / jobs.PROGRESS).read_text())
    for key in ("status", "done", "total", "rate", "eta_s", "message", "pid", "started",
                "finished", "error"):
        assert key in raw
    assert [j.job_id for j in jobs.list_jobs(ws)] == [job_id]
    assert jobs.latest(ws, "demo").job_id == job_id
    assert jobs.latest(ws, "other") is None


def test_failure_is_reported_with_message_and_log(ws):
    job_id = jobs.start(ws, "demo", target="tests.job_tasks:demo_task",
                        kwargs={"total": 5, "delay_s": 0.0, "fail_at": 2})
    state = jobs.wait(ws, job_id, timeout_s=60)
    assert state.status == jobs.ERROR
    assert "planned failure at step 2" in state.error
    assert "Traceback" in state.log_tail()


def test_bad_target_and_bad_kwargs_are_refused_or_reported(ws):
    with pytest.raises(ValueError):
        jobs.start(ws, "demo")
    with pytest.raises(TypeError):
        jobs.start(ws, "demo", target="x:y", kwargs={"obj": object()})
    job_id = jobs.start(ws, "demo2", target="clusterucb_core.runtime.jobs:no_such_function")
    state = jobs.wait(ws, job_id, timeout_s=60)
    assert state.status == jobs.ERROR and "no_such_function" in state.error


def test_cancel_stops_the_process_and_resume_continues(ws, tmp_path):
    out = tmp_path / "count.txt"
    job_id = jobs.start(ws, "demo", target="tests.job_tasks:demo_task",
                        kwargs={"total": 120, "delay_s": 0.02, "out": str(out)})
    _wait_for(lambda: jobs.status(ws, job_id).done >= 3)
    # a second job of the same kind is refused while this one runs
    with pytest.raises(ValueError, match="already running"):
        jobs.start(ws, "demo", target="tests.job_tasks:demo_task")
    pid = jobs.status(ws, job_id).pid
    state = jobs.cancel(ws, job_id, grace_s=5)
    assert state.status == jobs.CANCELLED
    assert not jobs._pid_alive(pid)
    counted = int(out.read_text())
    assert 3 <= counted < 120
    # resume: same folder, next attempt, carries on from what the task kept
    jobs.resume(ws, job_id)
    state = jobs.wait(ws, job_id, timeout_s=60)
    assert state.status == jobs.DONE, state.log_tail()
    assert state.attempt == 2
    assert state.extra["result"]["resumed_from"] >= counted


def test_killed_job_reads_as_crashed_then_resumes(ws, tmp_path):
    out = tmp_path / "count.txt"
    job_id = jobs.start(ws, "demo", target="tests.job_tasks:demo_task",
                        kwargs={"total": 100, "delay_s": 0.02, "out": str(out)})
    _wait_for(lambda: jobs.status(ws, job_id).done >= 2)
    pid = jobs.status(ws, job_id).pid
    os.kill(pid, signal.SIGKILL)  # no chance to write a final status
    state = _wait_for(lambda: (s := jobs.status(ws, job_id)).status == jobs.CRASHED and s)
    assert "stopped without finishing" in state.error
    assert not state.active
    jobs.resume(ws, job_id)
    state = jobs.wait(ws, job_id, timeout_s=60)
    assert state.status == jobs.DONE
    assert state.extra["result"]["resumed_from"] >= 2


def test_progress_callback_forms_rate_and_eta(tmp_path):
    p = jobs.Progress(tmp_path, unit="rows", min_interval_s=0)
    p(0, 100)
    p._base = (p._base[0] - 2.0, 0.0)  # pretend the first report was two seconds ago
    p(50, message="half")
    raw = json.loads((tmp_path / jobs.PROGRESS).read_text())
    assert raw["done"] == 50 and raw["total"] == 100 and raw["message"] == "half"
    assert raw["rate"] == pytest.approx(25, rel=0.2)
    assert raw["eta_s"] == pytest.approx(2, rel=0.2)
    p({"done": 60, "total": 100, "loss": 1.5})
    p(done=70, stage="save")
    raw = json.loads((tmp_path / jobs.PROGRESS).read_text())
    assert raw["done"] == 70 and raw["loss"] == 1.5 and raw["stage"] == "save"
    p.finish(jobs.DONE)
    raw = json.loads((tmp_path / jobs.PROGRESS).read_text())
    assert raw["status"] == "done" and raw["done"] == 100 and raw["eta_s"] is None


def test_report_is_noop_outside_a_job():
    assert progress.current() is None
    progress.report(None, 1, 2, "nothing happens")


def test_cli_output_drives_progress_until_explicit_reports(tmp_path):
    import io

    p = jobs.Progress(tmp_path, min_interval_s=0)
    sink = io.StringIO()
    tee = jobs._ProgressTee(sink, p)
    tee.write("features: 10/1,000 rows\rfeatures: 20/1,000 rows")
    assert p.state["done"] == 10  # the second segment is not finished yet
    tee.write("\nsaved\n")
    assert p.state["done"] == 20 and p.state["total"] == 1000
    assert "features: 20/1,000 rows" in p.state["message"]
    assert sink.getvalue().startswith("features: 10/1,000")
    p(5, 7, "explicit")
    tee.write("30/1000\n")  # ignored once the engine reports itself
    assert p.state["done"] == 5 and p.state["total"] == 7


def test_finished_jobs_leave_no_zombie(ws):
    """Issue 13, item 18: finished job processes stayed <defunct> under the server."""
    job_id = jobs.start(ws, "demo", target="tests.job_tasks:demo_task",
                        kwargs={"total": 2, "delay_s": 0.0})
    pid = int((ws.jobs(job_id) / jobs.PIDFILE).read_text())
    assert jobs.wait(ws, job_id, timeout_s=60).status == jobs.DONE

    def reaped():
        # "done" is written before the process exits: wait until the page's own calls have
        # collected it (a zombie stays in /proc until then)
        jobs.list_jobs(ws)  # what a page does on every run
        return pid not in jobs._CHILDREN and not os.path.exists(f"/proc/{pid}")

    _wait_for(reaped)
