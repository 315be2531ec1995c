"""A workspace: one folder that holds a project's whole state, so anything reopens it.

Every stage writes its output here (see the layout below), so the app, the CLI and a
distributed `torchrun` job meet at the same files and a browser refresh loses nothing.

    W/workspace.json           name, pool and target references, the settings last used
    W/checkpoints/<name>/      warm-up checkpoints (adapter + Adam state + average lr)
    W/features/<name>/         feature stores (memmap + done bitmap + manifest)
    W/targets/<name>/          target gradient features, per checkpoint
    W/clusters/<name>/         labels, centroids, summaries
    W/maps/<fingerprint>.npz   2-D map coordinates
    W/runs/<run_id>/           selection runs: spec + round log
    W/ledger.jsonl             curation edits
    W/exports/<run_id>/        exported selections
    W/jobs/<job_id>/           background job progress and logs
    W/pool_cache/              the pool parsed once, memory-mapped by every reader (pool_cache.py)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clusterucb_core.runtime import atomic

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def check_name(name: str, what: str = "name") -> str:
    """Names become folder names: refuse anything that could escape the workspace."""
    if not _NAME.match(name):
        raise ValueError(f"invalid {what} {name!r}: use letters, digits, '.', '_' or '-' "
                         "(at most 100, not starting with a dot)")
    return name


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def open(cls, root: str | Path, create: bool = True) -> Workspace:
        root = Path(root).expanduser().resolve()
        if not root.exists():
            if not create:
                raise FileNotFoundError(f"no workspace at {root}")
            root.mkdir(parents=True, exist_ok=True)  # torchrun ranks may race to create it
        elif not root.is_dir():
            raise NotADirectoryError(f"{root} is a file, not a workspace folder")
        ws = cls(root)
        if not ws.meta_path.exists():
            atomic.write_json(ws.meta_path, {"name": root.name, "version": 1})
        return ws

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def meta_path(self) -> Path:
        return self.root / "workspace.json"

    def meta(self) -> dict[str, Any]:
        """workspace.json: name, version, the pool and target chosen, the one `config`."""
        return json.loads(self.meta_path.read_text())

    def update_meta(self, **values: Any) -> dict[str, Any]:
        meta = self.meta()
        meta.update(values)
        atomic.write_json(self.meta_path, meta)
        return meta

    def update_config(self, section: str, values: dict[str, Any]) -> None:
        """Merge `values` into one settings section of the workspace's `config`."""
        cfg = dict(self.meta().get("config") or {})
        cfg[section] = {**(cfg.get(section) or {}), **values}
        self.update_meta(config=cfg)

    def _sub(self, kind: str, name: str | None = None) -> Path:
        base = self.root / kind
        return base if name is None else base / check_name(name)

    def checkpoints(self, name: str | None = None) -> Path:
        return self._sub("checkpoints", name)

    def features(self, name: str | None = None) -> Path:
        return self._sub("features", name)

    def targets(self, name: str | None = None) -> Path:
        return self._sub("targets", name)

    def clusters(self, name: str | None = None) -> Path:
        return self._sub("clusters", name)

    def maps(self) -> Path:
        return self._sub("maps")

    def runs(self, run_id: str | None = None) -> Path:
        return self._sub("runs", run_id)

    def exports(self, run_id: str | None = None) -> Path:
        return self._sub("exports", run_id)

    def jobs(self, job_id: str | None = None) -> Path:
        return self._sub("jobs", job_id)

    def scores(self, name: str = "exhaustive") -> Path:
        """A score table (one score per pool row): `exhaustive` is the pipeline's own."""
        return self._sub("scores", f"{name}.npy")

    def pool_cache(self) -> Path:
        return self._sub("pool_cache")

    @property
    def ledger_path(self) -> Path:
        return self.root / "ledger.jsonl"

    def list(self, kind: str) -> list[str]:
        """Names of the finished items of one kind (hidden/partial folders skipped)."""
        base = self.root / kind
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if not p.name.startswith("."))
