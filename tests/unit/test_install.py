"""The package as a user installs it: the wheel in a fresh environment runs `--version`, the
demo and the app; the CLI documents every flag; the demo is found or explained."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

from clusterucb_core.cli import app as app_cli
from clusterucb_core.cli import build_parser
from clusterucb_core.data import demo as demo_data

ROOT = Path(__file__).resolve().parents[2]


def _actions(parser: argparse.ArgumentParser, name: str = "clusterucb"):
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for sub_name, sub in a.choices.items():
                yield from _actions(sub, sub_name)
        else:
            yield name, a


def test_every_flag_has_help_and_choices_match_the_engine():
    undocumented = [(cmd, a.option_strings or a.dest) for cmd, a in _actions(build_parser())
                    if not a.help]
    assert undocumented == []
    by_flag = {(cmd, s): a for cmd, a in _actions(build_parser()) for s in a.option_strings}
    from clusterucb_core.features.projection import PROJECTORS

    assert tuple(by_flag[("features", "--projection")].choices) == PROJECTORS
    assert "bfloat16" in by_flag[("features", "--dtype")].choices
    with pytest.raises(SystemExit):
        build_parser().parse_args(["features", "-w", "x", "--projection", "gaussian"])


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("clusterucb ")


def test_app_command_carries_the_checkout_server_settings():
    assert app_cli.app_dir() == ROOT  # the editable install maps clusterucb_site to the root
    args = build_parser().parse_args(["app", "--port", "9123"])
    cmd = app_cli.command(args)
    assert cmd[1:4] == ["-m", "streamlit", "run"]
    assert cmd[4] == str(ROOT / "app.py")
    assert "--server.maxUploadSize=1024" in cmd and "--server.headless=true" in cmd
    assert cmd[-3:] == ["--server.address=127.0.0.1", "--server.port=9123",
                        "--browser.serverAddress=127.0.0.1"]
    with pytest.raises(ValueError, match="--port"):
        app_cli.command(build_parser().parse_args(["app", "--port", "0"]))


def test_demo_is_found_or_explained(tmp_path, monkeypatch):
    assert (demo_data.find_demo_dir() / "demo_run.toml").is_file()  # the checkout's
    monkeypatch.setenv(demo_data.ENV, str(tmp_path))
    assert demo_data.find_demo_dir() == tmp_path
    with pytest.raises(FileNotFoundError, match="CLUSTERUCB_DEMO_DIR") as exc:
        demo_data.require_demo("demo_run.toml")
    assert "lacks demo_run.toml" in str(exc.value)


def test_the_wheel_lists_every_package_folder():
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {p.parent.relative_to(ROOT).as_posix().replace("/", ".")
             for top in ("clusterucb_core", "clusterucb_app")
             for p in (ROOT / top).rglob("__init__.py")}
    assert found <= set(conf["packages"])
    assert conf["package-dir"] == {"clusterucb_demo": "sample_data", "clusterucb_site": "."}
    assert (ROOT / "app.py").is_file() and len(list((ROOT / "pages").glob("*.py"))) == 9


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_runs_demo_and_app(tmp_path):
    """Build the wheel, install it (no network, no dependencies fetched: the environment
    running the tests lends its packages), then use it from outside the checkout."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--no-index", "-q", "-w", str(wheels), str(ROOT)], check=True)
    wheel = next(wheels.glob("clusterucb_studio-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(subprocess.run([str(py), "-c", code], check=True, capture_output=True,
                               text=True).stdout.strip())
    # the test environment's packages, after the venv's own (a plain path: its .pth files,
    # e.g. an editable install of this checkout, are not run)
    (site / "lent.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps",
                    "--no-index", "--ignore-installed", "-q", str(wheel)], check=True)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", demo_data.ENV, "CLUSTERUCB_WORKSPACES")}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    work = tmp_path / "user"
    work.mkdir()

    def run(*cmd: str) -> str:
        out = subprocess.run(list(cmd), cwd=work, env=env, capture_output=True, text=True,
                             check=False)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
        return out.stdout

    where = run(str(py), "-c", "import clusterucb_core, clusterucb_app; "
                "from clusterucb_core.config import DEMO_DIR; "
                "print(clusterucb_core.__file__); print(clusterucb_app.__file__); print(DEMO_DIR)")
    assert all(line.startswith(str(venv)) for line in where.split()), where
    clu = str(venv / "bin" / "clusterucb")
    assert run(clu, "--version").strip() == "clusterucb 0.1.0"
    demo_pool = Path(where.split()[2]) / "demo_pool.jsonl"
    small = work / "small.jsonl"
    small.write_bytes(b"".join(demo_pool.read_bytes().splitlines(keepends=True)[:120]))
    out = run(clu, "demo", "--quick", "--pool", str(small), "--workspace", "ws")
    assert '"selected"' in out and (work / "ws" / "exports" / "ucb" / "manifest.json").is_file()

    port = _free_port()
    with open(tmp_path / "app.log", "wb") as log:
        proc = subprocess.Popen([clu, "app", "--port", str(port), "--workspaces", "wss"],
                                cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        while True:  # until the server answers (or dies)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health",
                                            timeout=5) as r:
                    assert r.read().strip() == b"ok"
                    break
            except OSError:
                assert proc.poll() is None, (tmp_path / "app.log").read_text()[-3000:]
                time.sleep(0.5)  # poll again
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
    shutil.rmtree(wheels)


_NO_APP_EXTRA = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("streamlit", "plotly"):
            raise ImportError(f"No module named {name!r} (the [app] extra is not installed)")
sys.meta_path.insert(0, Block())
"""


def test_the_engine_and_cli_run_without_the_app_extra(tmp_path):
    """`pip install clusterucb-studio` without [app]: no Streamlit, no Plotly. Every engine
    module imports, the CLI works, and `clusterucb app` says which extra it needs."""
    (tmp_path / "sitecustomize.py").write_text(_NO_APP_EXTRA)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    modules = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(
        ".__init__") for p in (ROOT / "clusterucb_core").rglob("*.py")
        if p.name != "__main__.py")
    code = ("import importlib, sys\n"
            "assert 'streamlit' not in sys.modules\n"
            f"for m in {modules!r}:\n    importlib.import_module(m)\n"
            "assert not any(k.split('.')[0] in ('streamlit', 'plotly') for k in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    cli = [sys.executable, "-m", "clusterucb_core.cli"]
    pool = ROOT / "sample_data" / "demo_pool.jsonl"
    out = subprocess.run([*cli, "validate", str(pool)], env=env, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    out = subprocess.run([*cli, "app", "--port", "9"], env=env, capture_output=True, text=True)
    assert out.returncode == 2 and "pip install 'clusterucb-studio[app]'" in out.stderr
