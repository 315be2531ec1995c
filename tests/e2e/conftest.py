"""Browser tests' shared pieces: a `streamlit run app.py` server on a
free localhost port.

Skips every browser test, with the reason, when Debian's Chromium or Playwright is missing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # e2e_support, for the test files

from e2e_support import CHROMIUM, ROOT  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _streamlit(base: Path, env: dict[str, str]) -> Iterator[str]:
    """Run the app with `env` added to the environment; yield its URL; stop it after."""
    port = _free_port()
    log_path = base / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run",
             str(ROOT / "app.py"),
             "--server.port", str(port), "--server.address", "127.0.0.1",
             "--server.headless", "true", "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1", **env), stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 90
        try:
            while True:
                try:
                    urllib.request.urlopen(url + "/_stcore/health", timeout=2)
                    break
                except OSError:
                    if proc.poll() is not None or time.time() > deadline:
                        raise RuntimeError("streamlit did not start:\n"
                                           + log_path.read_text()[-3000:]) from None
                    time.sleep(0.5)
            yield url
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def start_app():
    """`start_app(base, env)` -> URL of a fresh server (stopped at the end of the session)."""
    if not CHROMIUM.exists():
        pytest.skip("browser tests need Chromium at /usr/bin/chromium "
                    "(apt-get install chromium); skipped")
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with contextlib.ExitStack() as stack:
        yield lambda base, env: stack.enter_context(_streamlit(Path(base), env))
