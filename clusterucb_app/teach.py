"""State of the teaching pages (Playground, Policy race, Compare runs); no algorithm here.

The playground's settings and how many rounds were played live in `W/playground.json`, so a
refresh or a new tab rebuilds the same arms and replays the same rounds (everything is seeded,
so replaying is exact and takes milliseconds). The live runs are kept in the browser session.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import streamlit as st

from clusterucb_core.config import SelectionSpec
from clusterucb_core.runtime import atomic
from clusterucb_core.selection import run as selection
from clusterucb_core.teach import playground as pgm
from clusterucb_core.teach.race import ORACLE, RACE_POLICIES
from clusterucb_core.workspace import Workspace

PG_FILE = "playground.json"
SIDES = ("A", "B")
POLICY_HELP = ("ucb_beta: mean + β·std (the paper). ucb1: classic UCB1 (its bonus ignores the "
               "scale of the rewards). thresh_hard / thresh_normal: how often an arm beats the "
               "top-quantile of everything drawn. thompson: Gaussian Thompson sampling. "
               "random: a random arm every round (the baseline). oracle: knows the true means "
               "(only possible in a playground).")

DEFAULTS: dict[str, Any] = {
    "arms": pgm.PlaygroundSpec().to_dict(),
    "A": {"policy": "ucb_beta", "beta": 1.0, "quantile": 0.25},
    "B": {"policy": "random", "beta": 1.0, "quantile": 0.25},
    "side_by_side": True,
    "shared": {"cold_start": 0.05, "budget": 0.2, "top_p": 0.05, "draw_batch": 8, "seed": 0},
    "rounds": 0,
}


def load_settings(ws: Workspace) -> dict[str, Any]:
    out = copy.deepcopy(DEFAULTS)
    try:
        saved = json.loads((ws.root / PG_FILE).read_text())
    except (OSError, ValueError):
        return out
    if isinstance(saved, dict):
        for key, val in saved.items():
            if key in out and isinstance(out[key], dict) and isinstance(val, dict):
                out[key].update(val)
            elif key in out:
                out[key] = val
    return out


def save_settings(ws: Workspace, settings: dict[str, Any]) -> None:
    atomic.write_json(ws.root / PG_FILE, settings)


@st.cache_resource(max_entries=8, show_spinner=False)
def _build(spec_json: str) -> pgm.Playground:
    return pgm.build(pgm.PlaygroundSpec.from_dict(json.loads(spec_json)))


def playground(settings: dict[str, Any]) -> pgm.Playground:
    return _build(json.dumps(settings["arms"], sort_keys=True))


def selection_spec(side: dict[str, Any], shared: dict[str, Any]) -> SelectionSpec:
    policy = side["policy"]
    return SelectionSpec(policy="ucb_beta" if policy == ORACLE else policy,
                         beta=float(side.get("beta", 1.0)),
                         quantile=float(side.get("quantile", 0.25)),
                         cold_start=float(shared["cold_start"]), budget=float(shared["budget"]),
                         top_p=float(shared["top_p"]), draw_batch=int(shared["draw_batch"]),
                         seed=int(shared["seed"]))


def side_label(side: dict[str, Any]) -> str:
    p = side["policy"]
    if p == "ucb_beta":
        return f"ucb_beta (β={float(side.get('beta', 1.0)):g})"
    if p.startswith("thresh"):
        return f"{p} (q={float(side.get('quantile', 0.25)):g})"
    return p


def check_settings(settings: dict[str, Any]) -> None:
    """Raise ValueError naming the setting a user got wrong."""
    pg = playground(settings)
    for name in SIDES[: 2 if settings["side_by_side"] else 1]:
        side = settings[name]
        if side["policy"] not in RACE_POLICIES:
            raise ValueError(f"policy {name}: unknown policy {side['policy']!r}")
        spec = selection_spec(side, settings["shared"])  # checks every setting
        pg.new_run(spec)  # checks the cold start fits the budget


@dataclass
class Session:
    key: str
    pg: pgm.Playground
    runs: dict[str, selection.SelectionRun] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    steps: int = 0

    @property
    def done(self) -> bool:
        return all(r.done for r in self.runs.values())

    def step(self, n: int = 1) -> int:
        """Step every unfinished run once, n times; returns the steps taken."""
        taken = 0
        for _ in range(int(n)):
            if self.done:
                break
            for run in self.runs.values():
                if not run.done:
                    run.step()
            self.steps += 1
            taken += 1
        return taken


def _key(settings: dict[str, Any]) -> str:
    s = {k: v for k, v in settings.items() if k != "rounds"}
    return json.dumps(s, sort_keys=True)


def new_session(settings: dict[str, Any]) -> Session:
    pg = playground(settings)
    sess = Session(_key(settings), pg)
    for name in SIDES[: 2 if settings["side_by_side"] else 1]:
        side = settings[name]
        policy = pgm.OraclePolicy(pg.true_means) if side["policy"] == ORACLE else None
        sess.runs[name] = pg.new_run(selection_spec(side, settings["shared"]), policy)
        sess.labels[name] = side_label(side)
    return sess


def session(ws: Workspace) -> tuple[Session, dict[str, Any]]:
    """The live playground of this browser session, rebuilt (and its rounds replayed) from
    W/playground.json when the session has none or another tab changed it."""
    settings = load_settings(ws)
    store = st.session_state.setdefault("_pg_sessions", {})
    sess = store.get(str(ws.root))
    want = int(settings.get("rounds", 0))
    if sess is None or sess.key != _key(settings) or sess.steps > want:
        sess = new_session(settings)
        store[str(ws.root)] = sess
    if sess.steps < want:
        sess.step(want - sess.steps)
    return sess, settings


def step(ws: Workspace, n: int = 1) -> int:
    sess, settings = session(ws)
    taken = sess.step(n)
    if taken:
        settings["rounds"] = sess.steps
        save_settings(ws, settings)
    return taken


def reset(ws: Workspace) -> None:
    settings = load_settings(ws)
    settings["rounds"] = 0
    save_settings(ws, settings)
    st.session_state.get("_pg_sessions", {}).pop(str(ws.root), None)


def best_arm_share(run: selection.SelectionRun, pg: pgm.Playground) -> tuple[int, int]:
    """(draws on the best arm, all draws) so far."""
    drawn = run.round_drawn >= 0
    return int((drawn & (pg.labels == pg.best_arm)).sum()), int(drawn.sum())


def arm_values(run: selection.SelectionRun) -> tuple[np.ndarray | None, int | None, str]:
    """The policy values to show, the arm about to be played, and the why-sentence."""
    from . import rounds

    nxt = rounds.preview(run)
    if nxt is None:
        values = run.records[-1].value if run.records else None
        return values, None, ""
    values = nxt["values"] if nxt["values"] is not None else (
        run.records[-1].value if run.records else None)
    return values, nxt["arm"], nxt["sentence"]
