"""Curation marks as the pages show them: a status per row and per cluster, its colour, the
edits that undo a change, and the sentence that says what an edit did. Pure functions of a
`curation.LedgerState` (no streamlit), so every page marks rows the same way.

The selection rule lives here too, in words, next to `selection.select_top` which applies it: pins
take slots of the `floor(N·p)` selected rows (the export's size is the one top-p says; with
more pins than slots, every pin is kept and nothing else).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

PINNED, REJECTED, BANNED = "pinned", "rejected", "banned cluster"
STATUSES = ("", PINNED, REJECTED, BANNED)
# Not in the cluster palette (plots_rounds.PALETTE): a mark never reads as a cluster colour.
COLOURS = {"": "#d0d4da", PINNED: "#2b8a3e", REJECTED: "#e03131", BANNED: "#495057"}
SYMBOLS = {PINNED: "star", REJECTED: "x", BANNED: "square"}


def row_status(rows: Iterable[int], labels: Sequence[int] | np.ndarray, state: Any) -> list[str]:
    """'pinned' / 'rejected' / 'banned cluster' / '' per row: a pin wins over a ban (the row
    stays selected), a rejection too (the row is out either way)."""
    labels = np.asarray(labels)
    out = []
    for r in rows:
        r = int(r)
        if r in state.pinned:
            out.append(PINNED)
        elif r in state.rejected:
            out.append(REJECTED)
        elif 0 <= r < len(labels) and int(labels[r]) in state.banned:
            out.append(BANNED)
        else:
            out.append("")
    return out


def all_status(labels: Sequence[int] | np.ndarray, state: Any) -> np.ndarray:
    """The status of every row 0..N-1 (for colouring a map)."""
    labels = np.asarray(labels)
    out = np.full(len(labels), "", dtype=object)
    if state.banned:
        out[np.isin(labels, np.array(sorted(state.banned)))] = BANNED
    for r in state.rejected:
        if 0 <= r < len(out):
            out[r] = REJECTED
    for r in state.pinned:
        if 0 <= r < len(out):
            out[r] = PINNED
    return out


def cluster_status(k: int, labels: Sequence[int] | np.ndarray, state: Any) -> list[str]:
    """Per cluster: 'banned', or how many of its rows are pinned / rejected ('2 pinned')."""
    labels = np.asarray(labels)
    out = []
    for c in range(int(k)):
        parts = ["banned"] if c in state.banned else []
        for name, rows in ((PINNED, state.pinned), (REJECTED, state.rejected)):
            n = sum(1 for r in rows if 0 <= r < len(labels) and int(labels[r]) == c)
            if n:
                parts.append(f"{n} {name}")
        out.append(", ".join(parts))
    return out


def restore_edits(current: Any, target: Any, rows: Iterable[int] | None = None,
                  clusters: Iterable[int] | None = None) -> list[tuple[str, Any]]:
    """The ledger edits that turn state `current` back into `target` (an undo), limited to
    `rows` and `clusters` when given (so an undo leaves other tabs' edits alone): unpins and
    unrejects first, then pins and rejects (they exclude each other), then bans."""
    def only(a: Any, b: Any, keep: Iterable[int] | None) -> set[int]:
        diff = set(a) - set(b)
        return diff if keep is None else diff & {int(x) for x in keep}

    edits: list[tuple[str, Any]] = []
    for op, pending in (("unpin", only(current.pinned, target.pinned, rows)),
                        ("unreject", only(current.rejected, target.rejected, rows)),
                        ("pin", only(target.pinned, current.pinned, rows)),
                        ("reject", only(target.rejected, current.rejected, rows))):
        if pending:
            edits.append((op, sorted(int(r) for r in pending)))
    edits += [("unban", int(c)) for c in sorted(only(current.banned, target.banned, clusters))]
    edits += [("ban", int(c)) for c in sorted(only(target.banned, current.banned, clusters))]
    return edits


def apply_edits(ledger: Any, edits: Iterable[tuple[str, Any]], note: str,
                action: str | None = None) -> None:
    for op, arg in edits:
        getattr(ledger, op)(arg, note=note, action=action)


UNDO_PREFIX = "undo:"


def last_action(edits: Sequence[dict[str, Any]], clustering: str | None) -> dict[str, Any] | None:
    """The ledger's last user action that an Undo can take back, read from the ledger itself
    (so it survives a reload): {"action", "op", "items", "before"} with `before` the state
    just before its first edit; None when the last action was an undo, when no edit names
    an action, or when it banned clusters of another clustering."""
    from clusterucb_core.selection.curation import fold

    named = [i for i, e in enumerate(edits) if e.get("action")]
    if not named:
        return None
    action = str(edits[named[-1]]["action"])
    if action.startswith(UNDO_PREFIX):
        return None
    group = [i for i in named if edits[i]["action"] == action]
    first = edits[group[0]]
    op = str(first.get("op"))
    if op in ("ban", "unban"):
        if any(edits[i].get("clustering") not in (None, clustering) for i in group):
            return None
        items = sorted({int(edits[i]["cluster"]) for i in group})
    else:
        items = sorted({int(r) for i in group for r in edits[i].get("rows", [])})
    return {"action": action, "op": op, "items": items,
            "before": fold(edits[:group[0]], clustering)}


def _list(items: Sequence[Any], limit: int = 6) -> str:
    items = [str(i) for i in items]
    head = ", ".join(items[:limit])
    return head + (f" and {len(items) - limit} more" if len(items) > limit else "")


def edit_message(op: str, items: Sequence[int], ids: Mapping[int, str] | None = None,
                 names: Mapping[int, str] | None = None) -> str:
    """'Pinned 3 rows: 4 (id a), 9, 12.' / 'Banned cluster 5: maths.' — what a toast says."""
    verb = {"pin": "Pinned", "unpin": "Unpinned", "reject": "Rejected",
            "unreject": "Unrejected", "ban": "Banned", "unban": "Unbanned"}[op]
    items = [int(i) for i in items]
    if op in ("ban", "unban"):
        names = names or {}
        what = "cluster" if len(items) == 1 else f"{len(items)} clusters"
        return f"{verb} {what}: " + _list([names.get(c, str(c)) for c in items]) + "."
    ids = ids or {}
    shown = [f"{r} ({ids[r]})" if r in ids else str(r) for r in items]
    what = "row" if len(items) == 1 else f"{len(items)} rows"
    return f"{verb} {what}: " + _list(shown) + "."


def undo_label(op: str, items: Sequence[int]) -> str:
    noun = "cluster" if op in ("ban", "unban") else "row"
    n = len(items)
    return f"Undo: {op} {n} {noun}{'s' if n != 1 else ''}"


def selection_rule(n_top: int, n_pinned: int, n_rows: int | None = None,
                   top_p: float | None = None, balance: str = "max") -> str:
    """The rule the selection follows, with this run's numbers, as the page states it."""
    size = f"floor(N·p) = {n_top:,}" if n_rows is None or top_p is None else \
        f"floor({n_rows:,} × {top_p:g}) = {n_top:,}"
    fill = max(n_top - n_pinned, 0)
    best = (f"{fill:,} best-scored rows the bandit scored" if balance != "subtasks" else
            f"{fill:,} rows the bandit scored, taken round-robin over the target's subtasks "
            "(each subtask in turn takes its best row by its own cosine)")
    text = (f"Selected = {size} rows: every pinned row first ({n_pinned:,}), then the "
            f"{best}, leaving out rejected rows and rows "
            "of banned clusters. Pins take slots: the export keeps the size top-p says")
    if n_pinned > n_top:
        text += f"; with {n_pinned:,} pins for {n_top:,} slots every pin is kept and nothing else"
    return text + "."
