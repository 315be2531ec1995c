"""The guided tour: a first-visit walkthrough of the demo, one short card per step.

Written for someone who knows fine-tuning but not bandits. The card sits at the top of the
sidebar on every page (collapsible), with Back / Next (which opens that step's page) and
Skip. Where the reader is, and whether the tour is done, is remembered per user in
`~/.clusterucb/tour.json` (`CLUSTERUCB_HOME` overrides the folder), so a finished or skipped
tour stays out of the way in every workspace and after a restart; "Restart the tour" brings
it back.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from clusterucb_core.runtime import atomic


@dataclass(frozen=True)
class Step:
    title: str
    page: str  # page script, relative to streamlit_app.py
    text: str


STEPS: tuple[Step, ...] = (
    Step("Welcome", "pages/1_pool.py",
         "You have a big pool of instruction data and a small **target** task you care about. "
         "This app picks the pool rows whose training would help the target most, while "
         "computing expensive per-row gradients for only a **fraction** of the pool. Eleven "
         "steps, a minute each; skip whenever you like."),
    Step("The pool", "pages/1_pool.py",
         "This is the candidate fine-tuning data: chats, one per row, from several sources. "
         "The demo pool is small so everything runs on a laptop CPU. Check the preview and "
         "the validation report, then go on."),
    Step("The target", "pages/2_target.py",
         "A handful of examples of the task you want to get better at (like a validation "
         "set), grouped into **subtasks**. Selection asks: which pool rows push the model in "
         "the same direction as these examples?"),
    Step("Gradient features", "pages/3_features.py",
         "A row's **gradient feature** is the gradient of its fine-tuning loss with respect "
         "to small LoRA adapters, after a short warm-up, randomly projected to a few thousand "
         "numbers and normalised. Its cosine with the target examples' gradients is the "
         "row's **influence score**: high means one training step on it lowers the target "
         "loss. One backward pass per row: this is the expensive part."),
    Step("Why clusters", "pages/4_clusters.py",
         "Rows the model represents alike tend to have similar scores. So the pool is "
         "clustered once on cheap features (hidden states: one forward pass per row, no "
         "gradient), and a few scored rows tell a lot about their whole cluster. "
         "Each cluster becomes an **arm** of a slot machine: pulling it = scoring a few of "
         "its rows."),
    Step("mean + β·std", "pages/5_rounds.py",
         "Every round the bandit plays the arm with the largest **mean + β·std** of the "
         "scores drawn from it so far. The mean says how good the arm looked; the std says "
         "how unsure we still are. β = 0 always exploits the best-looking arm; a larger β "
         "explores arms that might be better. Press *Cold start*, then step a few rounds "
         "and read the sentence that says why each arm was chosen."),
    Step("What the budget buys", "pages/5_rounds.py",
         "The **budget** is the share of the pool whose gradients you pay for (20% by "
         "default). At the end, the top-p rows (5%) among the scored ones are selected. A "
         "good bandit spends the budget where the best rows are, so its 5% is close to what "
         "scoring *every* row would pick: that is the recall shown on this page."),
    Step("Curate and export", "pages/6_export.py",
         "Pin or reject rows, ban a cluster, and download the selection as JSONL in the "
         "pool's own format, ready for your fine-tuning script."),
    Step("Playground", "pages/7_playground.py",
         "No model needed: make arms whose truth you know, with one small **hidden gem**, "
         "press ▶ Play and watch UCB find the gem while random play does not. Reveal the "
         "truth to see the true means and the regret."),
    Step("Policy race", "pages/8_race.py",
         "All the arm rules on the same arms, the same draws and several seeds: recall of "
         "the true top-p as the budget is spent, regret, and where each spent its draws."),
    Step("Compare runs", "pages/9_compare.py",
         "Two selections with different settings side by side: which rows both chose, and "
         "where the changed setting moved the selection. That's the tour!"),
)


def home() -> Path:
    return Path(os.environ.get("CLUSTERUCB_HOME", Path.home() / ".clusterucb")).expanduser()


def state_path() -> Path:
    return home() / "tour.json"


def load() -> dict:
    try:
        data = json.loads(state_path().read_text())
        if not isinstance(data, dict):
            raise ValueError
    except (OSError, ValueError):
        return {"done": False, "step": 0}
    step = data.get("step", 0)
    step = step if isinstance(step, int) and 0 <= step < len(STEPS) else 0
    return {"done": bool(data.get("done", False)), "step": step}


def save(done: bool, step: int) -> None:
    """Remember the tour's state; a read-only home only loses the memory, not the page."""
    try:
        state_path().parent.mkdir(parents=True, exist_ok=True)
        atomic.write_json(state_path(), {"done": bool(done), "step": int(step)})
    except OSError:
        pass
    st.session_state["_tour"] = {"done": bool(done), "step": int(step)}


def current() -> dict:
    if "_tour" not in st.session_state:
        st.session_state["_tour"] = load()
    return st.session_state["_tour"]


def _go(step: int) -> None:
    save(False, step)
    try:
        st.switch_page(STEPS[step].page)
    except st.errors.StreamlitAPIException:  # the page is not in this app's navigation
        st.rerun()


def card() -> None:
    """The tour card (call it inside `with st.sidebar:`)."""
    t = current()
    if t["done"]:
        if st.button("Restart the guided tour", key="tour_restart", type="tertiary",
                     icon=":material/explore:"):
            _go(0)
        return
    i = t["step"]
    step = STEPS[i]
    with st.expander(f"Guided tour · {i + 1}/{len(STEPS)}: {step.title}", expanded=True,
                     icon=":material/explore:"):
        st.markdown(step.text)
        c = st.columns(2)
        back = c[0].button("‹ Back", key="tour_back", disabled=i == 0, width="stretch")
        last = i == len(STEPS) - 1
        nxt = c[1].button("Finish" if last else "Next ›", key="tour_next", type="primary",
                          width="stretch")
        name = Path(step.page).stem.split("_", 1)[-1].replace("_", " ").title()
        try:
            st.page_link(step.page, label=f"Open the {name} page", icon=":material/arrow_forward:")
        except st.errors.StreamlitAPIException:  # not in this app's navigation
            pass
        skip = st.button("Skip the tour", key="tour_skip", type="tertiary",
                         help="Hide the tour; restart it any time from the sidebar.")
    if skip or (nxt and last):
        save(True, 0 if skip else i)
        st.rerun()
    elif nxt:
        _go(i + 1)
    elif back:
        _go(i - 1)
