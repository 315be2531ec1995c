"""Wiring from the app's buttons to the engine's functions (no algorithm here).

Each long step becomes a background job (`clusterucb_core.jobs`); quick lookups are plain
calls. Filled in as the engine modules land.
"""

from __future__ import annotations

from typing import Any

from clusterucb_core.workspace import Workspace


def lazy_oracle_available(ws: Workspace) -> bool:
    return False


def lazy_oracle(ws: Workspace) -> Any:
    raise NotImplementedError("lazy gradient rewards are not wired yet")
