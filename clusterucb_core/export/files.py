"""Exporting a selection: the user's own records, tables with provenance, LESS's files.

`export_selection(out_dir, pool, result, ...)` writes one folder, atomically (it appears
whole or not at all; a crash leaves only a hidden `.NAME.*.part` folder):

    selected.<ext>        the selected records as the user wrote them, in pool order:
                          JSONL / CSV / TSV: the original lines byte for byte (CSV / TSV with
                          the file's header line first); JSON: a JSON array of the original
                          element texts; Parquet / datasets: Parquet of the original rows
    selection.parquet     every drawn, pinned or rejected row: row, id, source, line_no,
    selection.csv         cluster, cluster_label, score, round_drawn, selected, rank, pinned,
                          rejected, tags (selected rows first, best first; tags joined by
                          ", ")
    tags.jsonl            the ledger's tags of every tagged row ({"row", "id", "tags"}), for
                          the byte-exact files above, which cannot carry them
    sorted.csv            LESS's score file: header `file name, index, score`, one line per
                          scored row, best first; index = for JSONL the 0-based line LESS's
                          `readlines()[index]` reads, for other formats the row's 0-based
                          position among the pool's records (a multi-line CSV record counts
                          once), score rounded to 6
    top_p{p}.jsonl        LESS's selection file (p as LESS prints it, e.g. top_p0.05.jsonl):
                          the selection best first; JSONL pools: the original lines, other
                          formats: {"dataset", "id", "messages"} records (LESS's layout)
    dataset/              a Hugging Face `datasets` save_to_disk folder of the selection
                          (row, id, source, messages, score, cluster, cluster_label,
                          round_drawn, pinned, tags), ready for load_from_disk or push_to_hub
    run/log.jsonl         the run's round log, when given (replayable provenance)
    manifest.json         every setting, the seed, fingerprints (pool, labels, scores,
                          ledger), package versions, the selected rows and ids, the tags and
                          cluster names of the ledger, and the
                          size and sha256 of every file above; written last

`reproduce_selection(manifest, labels, oracle)` reruns the selection from a manifest.
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import json
import os
import platform
import re
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from clusterucb_core.config import SelectionSpec, from_dict, to_dict
from clusterucb_core.data.sources import source_facts
from clusterucb_core.runtime import atomic
from clusterucb_core.selection.audit import audit_result
from clusterucb_core.selection.oracle import mass_share, recall, scores_fingerprint
from clusterucb_core.selection.run import (
    LedgerView,
    SelectionResult,
    SelectionRun,
    labels_fingerprint,
)

MANIFEST = "manifest.json"
MANIFEST_KIND = "clusterucb-selection"
MANIFEST_VERSION = 1
_PACKAGES = ("clusterucb-studio", "numpy", "pandas", "pyarrow", "datasets", "torch",
             "transformers", "peft", "scikit-learn")


def top_p_name(p: float) -> str:
    """LESS names its file f"top_p{percentage}.jsonl" with the float as Python prints it."""
    return f"top_p{float(p)}.jsonl"


def package_versions() -> dict[str, str | None]:

    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _enc(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def delimited_header(path: Path, delimiter: str) -> bytes:
    """The bytes of a CSV/TSV file up to the end of its header record (BOM, any blank lines
    before it and its line terminator included), read the way pool.py reads the file."""
    data = Path(path).read_bytes()
    text = data.decode("utf-8", "surrogateescape")
    lines = [m for m in re.split(r"(?<=\n)", text) if m]
    consumed = 0

    def feed():
        nonlocal consumed
        for ln in lines:
            consumed += 1
            yield ln.lstrip("\ufeff") if consumed == 1 else ln

    for row in csv.reader(feed(), delimiter=delimiter):
        if row and any(c.strip() for c in row):
            break
    return _enc("".join(lines[:consumed]))


def _dataset_split(path: Path):
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        ds = ds["train"] if "train" in ds else ds[list(ds)[0]]
    return ds


def write_original(folder: Path, pool: Any, rows: np.ndarray) -> str:
    """Write the selected records in the pool's own format; returns the file name."""
    rows = np.sort(np.asarray(rows, dtype=np.int64))
    raws = pool.records(rows)  # re-read from the file by offset
    nl = _enc(pool.newline)
    fmt = pool.format
    if fmt == "jsonl":
        name = "selected.jsonl"
        (folder / name).write_bytes(b"".join(r + nl for r in raws))
    elif fmt in ("csv", "tsv"):
        name = f"selected.{fmt}"
        head = delimited_header(pool.path, "," if fmt == "csv" else "\t")
        (folder / name).write_bytes(head + b"".join(r + nl for r in raws))
    elif fmt == "json":
        name = "selected.json"
        body = (b"," + nl).join(raws)
        (folder / name).write_bytes(b"[" + nl + body + (nl if len(raws) else b"") + b"]" + nl)
    elif fmt in ("parquet", "datasets"):
        import pyarrow.parquet as pq

        name = "selected.parquet"
        index = (pool.column("line_no", rows) - 1).astype(np.int64)
        if fmt == "parquet":
            from clusterucb_core.data.sources import parquet_table  # a file, or a folder of shards

            pq.write_table(parquet_table(pool.path).take(index), folder / name)
        else:
            _dataset_split(pool.path).select(index.tolist()).to_parquet(str(folder / name))
    else:
        raise ValueError(f"cannot export pools of format {fmt!r}")
    return name


def _tag_text(tags: Mapping[int, Any] | None, r: int) -> str:
    return ", ".join((tags or {}).get(int(r), ()))


def selection_table(pool: Any, result: SelectionResult,
                    cluster_names: Mapping[int, str] | None = None,
                    tags: Mapping[int, Any] | None = None):
    """Every drawn, pinned or rejected row with its provenance (pandas DataFrame); tagged
    rows are listed too."""
    import pandas as pd

    n = len(result.scores)
    keep = result.round_drawn >= 0
    for r in list(result.pinned) + list(result.rejected) + list(tags or {}):
        if 0 <= r < n:
            keep[r] = True
    rank = np.full(n, -1, dtype=np.int64)
    rank[result.rows] = np.arange(1, len(result.rows) + 1)
    rows = np.flatnonzero(keep)
    labels = result.labels[rows]
    names = cluster_names or {}
    df = pd.DataFrame({
        "row": rows,
        "id": pool.column("id", rows).astype(str),
        "source": pool.column("source", rows).astype(str),
        "line_no": pool.column("line_no", rows).astype(np.int64),
        "cluster": labels,
        "cluster_label": [names.get(int(c), f"cluster {int(c)}") if c >= 0 else ""
                          for c in labels],
        "score": result.scores[rows],
        "round_drawn": pd.array(np.where(result.round_drawn[rows] >= 0,
                                         result.round_drawn[rows], 0), dtype="Int64"),
        "selected": rank[rows] > 0,
        "rank": pd.array(rank[rows], dtype="Int64"),
        "pinned": np.isin(rows, np.array(sorted(result.pinned), dtype=np.int64)),
        "rejected": np.isin(rows, np.array(sorted(result.rejected), dtype=np.int64)),
        "tags": [_tag_text(tags, r) for r in rows],
    })
    if result.best_subtask is not None:
        df["best_subtask"] = [result.best_subtask.get(int(r), "") for r in rows]
    df.loc[result.round_drawn[rows] < 0, "round_drawn"] = pd.NA
    df.loc[rank[rows] <= 0, "rank"] = pd.NA
    order = np.lexsort((rows, -np.nan_to_num(result.scores[rows], nan=-np.inf),
                        np.where(rank[rows] > 0, rank[rows], n + 1)))
    return df.iloc[order].reset_index(drop=True)


def write_less_files(folder: Path, pool: Any, result: SelectionResult,
                     tags: Mapping[int, Any] | None = None) -> list[str]:
    """`sorted.csv` and `top_p{p}.jsonl` the way LESS's write_selected_data.py writes them."""
    name = Path(pool.path).stem if Path(pool.path).suffix else Path(pool.path).name
    s = result.scores
    scored = np.flatnonzero(np.isfinite(s))
    order = scored[np.lexsort((scored, -s[scored]))]
    # JSONL: the line LESS's readlines()[index] reads; other formats: the row's position among
    # the pool's records (a CSV record spanning several lines is one record, so its line
    # number would be wrong)
    index = (pool.column("line_no").astype(np.int64) - 1 if pool.format == "jsonl"
             else np.arange(len(pool), dtype=np.int64))
    out = ["file name, index, score\n"]
    out += [f"{name}, {int(index[r])}, {round(float(s[r]), 6)}\n" for r in order]
    (folder / "sorted.csv").write_text("".join(out), encoding="utf-8")

    top = top_p_name(result.spec.top_p)
    if pool.format == "jsonl":
        nl = _enc(pool.newline)
        data = b"".join(r + nl for r in pool.records(result.rows))
    else:
        rows = np.asarray(result.rows, dtype=np.int64)
        ids, srcs = pool.column("id", rows), pool.column("source", rows)
        def rec(r: int, s: Any, i: Any, m: Any) -> dict[str, Any]:
            out = {"dataset": str(s), "id": str(i), "messages": m}
            if (tags or {}).get(r):
                out["tags"] = list(tags[r])  # type: ignore[index]
            return out

        data = b"".join(_enc(json.dumps(rec(int(r), s, i, m), ensure_ascii=False)) + b"\n"
                        for r, s, i, m in zip(rows, srcs, ids, pool.messages(rows)))
    (folder / top).write_bytes(data)
    return ["sorted.csv", top]


def write_tags(folder: Path, pool: Any, tags: Mapping[int, Any] | None) -> str | None:
    """`tags.jsonl`: one {"row", "id", "tags"} per tagged row (row order); None if no tags."""
    rows = np.array(sorted(int(r) for r, t in (tags or {}).items()
                           if t and 0 <= int(r) < len(pool)), dtype=np.int64)
    if not len(rows):
        return None
    ids = pool.column("id", rows)
    lines = [json.dumps({"row": int(r), "id": str(i), "tags": list(tags[int(r)])},
                        ensure_ascii=False) for r, i in zip(rows, ids)]
    (folder / "tags.jsonl").write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")
    return "tags.jsonl"


def write_dataset(folder: Path, pool: Any, result: SelectionResult,
                  cluster_names: Mapping[int, str] | None = None,
                  tags: Mapping[int, Any] | None = None) -> str:
    """The selection as a `datasets` save_to_disk folder (pool order)."""
    import datasets

    rows = np.sort(result.rows)
    names = cluster_names or {}
    pinned = set(result.pinned)
    ids, srcs, msgs = pool.column("id", rows), pool.column("source", rows), pool.messages(rows)
    recs = []
    for j, r in enumerate(rows.tolist()):
        c = int(result.labels[r])
        sc = float(result.scores[r])
        recs.append({"row": r, "id": str(ids[j]), "source": str(srcs[j]),
                     "messages": [{"role": str(m["role"]), "content": str(m["content"])}
                                  for m in msgs[j]],
                     "score": sc if np.isfinite(sc) else None, "cluster": c,
                     "cluster_label": names.get(c, f"cluster {c}") if c >= 0 else "",
                     "round_drawn": int(result.round_drawn[r]) if result.round_drawn[r] >= 0
                     else None,
                     "pinned": r in pinned, "tags": list((tags or {}).get(r, ()))})
    features = datasets.Features({
        "row": datasets.Value("int64"), "id": datasets.Value("string"),
        "source": datasets.Value("string"),
        "messages": [{"role": datasets.Value("string"), "content": datasets.Value("string")}],
        "score": datasets.Value("float64"), "cluster": datasets.Value("int64"),
        "cluster_label": datasets.Value("string"), "round_drawn": datasets.Value("int64"),
        "pinned": datasets.Value("bool"), "tags": [datasets.Value("string")]})
    ds = datasets.Dataset.from_list(recs, features=features)
    quiet = datasets.is_progress_bar_enabled()
    if quiet:
        datasets.disable_progress_bars()
    try:
        ds.save_to_disk(str(folder / "dataset"))
    finally:
        if quiet:
            datasets.enable_progress_bars()
    return "dataset"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _files(folder: Path) -> dict[str, dict[str, Any]]:
    return {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
            for p in sorted(folder.rglob("*")) if p.is_file()}


def export_selection(out_dir: str | Path, pool: Any, result: SelectionResult, *,
                     run_id: str | None = None, clustering: str | None = None,
                     cluster_names: Mapping[int, str] | None = None,
                     oracle_info: dict[str, Any] | None = None,
                     ledger_state: Any = None, log_path: str | Path | None = None,
                     exhaustive: np.ndarray | None = None, with_dataset: bool = True,
                     extra: dict[str, Any] | None = None,
                     features: np.ndarray | None = None) -> Path:
    """Write the export folder (see the module docstring); returns its path. features: the
    run's cluster features, for the audit meter's estimates (selection/audit.py)."""
    out_dir = Path(out_dir)
    n = len(pool)
    if len(result.scores) != n:
        raise ValueError(f"the run covers {len(result.scores)} rows but the pool has {n}: "
                         "export with the pool the run was made on")
    rows = np.asarray(result.rows, dtype=np.int64)
    metrics = None
    if exhaustive is not None and len(exhaustive) == n:
        metrics = {"recall_of_exhaustive_top_p": recall(rows, exhaustive, result.n_top),
                   "mass_share_of_exhaustive_top_p": mass_share(rows, exhaustive,
                                                                result.n_top)}
    audit = audit_result(result, features)
    ledger = {"banned": sorted(result.banned), "pinned": sorted(result.pinned),
              "rejected": sorted(result.rejected),
              "ban_changes": [[r, list(b)] for r, b in result.ban_changes],
              "fingerprint": hashlib.sha256(json.dumps(
                  [sorted(result.banned), sorted(result.pinned),
                   sorted(result.rejected)]).encode()).hexdigest()[:16]}
    if ledger_state is not None and hasattr(ledger_state, "notes"):
        ledger["notes"] = list(ledger_state.notes)
        ledger["n_edits"] = int(getattr(ledger_state, "n_edits", 0))
    tags = dict(getattr(ledger_state, "tags", None) or {})
    names = {**(cluster_names or {}), **(getattr(ledger_state, "names", None) or {})}
    with atomic.atomic_dir(out_dir) as tmp:
        files = {"original": write_original(tmp, pool, rows)}
        table = selection_table(pool, result, names, tags)
        table.to_parquet(tmp / "selection.parquet", index=False)
        table.to_csv(tmp / "selection.csv", index=False)
        files["less"] = write_less_files(tmp, pool, result, tags)
        tag_file = write_tags(tmp, pool, tags)
        if tag_file:
            files["tags"] = tag_file
        if with_dataset:
            files["dataset"] = write_dataset(tmp, pool, result, names, tags)
        if log_path is not None and Path(log_path).exists():
            (tmp / "run").mkdir()
            raw = Path(log_path).read_bytes()  # complete lines only: a writer may be mid-line
            (tmp / "run" / "log.jsonl").write_bytes(raw[:raw.rfind(b"\n") + 1])
        manifest = {
            "kind": MANIFEST_KIND, "version": MANIFEST_VERSION,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "run_id": run_id,
            "spec": to_dict(result.spec), "seed": int(result.spec.seed),
            "counts": {"n_rows": n, "k": int(result.k or (int(result.labels.max()) + 1)),
                       "budget_total": result.budget_total, "budget_used": result.budget_used,
                       "n_rounds": result.n_rounds, "n_top": result.n_top,
                       "n_selected": int(len(rows)),
                       "n_pinned_selected": int(np.isin(rows, sorted(result.pinned)).sum())},
            "pool": {"path": str(pool.path), "resolved_path": str(Path(pool.path).resolve()),
                     "format": pool.format,
                     "shape": getattr(pool, "shape", None), "fingerprint": pool.fingerprint,
                     "newline": pool.newline, "n_rows": n, **source_facts(Path(pool.path))},
            "clusters": {"name": clustering, "labels_fingerprint": result.labels_fingerprint},
            "oracle": oracle_info,
            "scores_fingerprint": scores_fingerprint(result.scores),
            "ledger": ledger,
            "metrics": metrics,
            "audit": None if audit is None else {**audit.to_dict(), "sentence": audit.sentence()},
            "selected": {"rows": [int(r) for r in rows],
                         "ids": [str(x) for x in pool.column("id", rows)],
                         "line_no": [int(x) for x in pool.column("line_no", rows)],
                         "tags": [list(tags.get(int(r), ())) for r in rows]},
            "tags": {"rows": {str(r): list(v) for r, v in sorted(tags.items())},
                     "counts": ledger_state.tag_counts() if tags else {}},
            "cluster_names": {str(k): v for k, v in sorted(names.items())},
            "files": _files(tmp),
            "layout": files,
            "versions": package_versions(),
            "extra": extra or {},
        }
        atomic.write_json(tmp / MANIFEST, manifest)
        _share_like_umask(tmp)
    return out_dir


def _share_like_umask(folder: Path) -> None:
    """Temporary files are created private (0600/0700); give the export the permissions a
    plain write would have had (0666/0777 minus the umask)."""

    mask = os.umask(0)
    os.umask(mask)
    for p in [folder, *folder.rglob("*")]:
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


def load_manifest(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    manifest = json.loads(path.read_text())
    if manifest.get("kind") != MANIFEST_KIND:
        raise ValueError(f"{path} is not a ClusterUCB selection manifest")
    return manifest


def verify_export(folder: str | Path) -> list[str]:
    """Files whose size or sha256 differ from the manifest (empty: the export is intact)."""
    folder = Path(folder)
    manifest = load_manifest(folder)
    bad = []
    for rel, info in manifest["files"].items():
        p = folder / rel
        if not p.is_file() or p.stat().st_size != info["bytes"] or _sha256(p) != info["sha256"]:
            bad.append(rel)
    return bad


class _ScriptedBans:
    """A ledger that replays the banned set a run saw round by round (from a manifest)."""

    def __init__(self, changes: list, pinned: list[int], rejected: list[int]):
        self.changes = [(int(r), frozenset(int(k) for k in b)) for r, b in changes]
        self.pinned = frozenset(pinned)
        self.rejected = frozenset(rejected)
        self.run: SelectionRun | None = None

    def state(self) -> LedgerView:
        r = 0 if self.run is None else self.run.next_round
        banned = self.changes[0][1] if self.changes else frozenset()
        for start, b in self.changes:
            if start <= r:
                banned = b
        return LedgerView(banned, self.pinned, self.rejected)


def reproduce_selection(manifest: dict[str, Any] | str | Path, labels: np.ndarray,
                        oracle: Any, features: np.ndarray | None = None) -> np.ndarray:
    """Rerun a selection from its manifest with the same labels and reward oracle, applying
    the bans as the run saw them and the final ledger; returns the selected rows (best
    first), which equal `manifest["selected"]["rows"]` when nothing changed. `features`:
    the run's, for a spec that uses them (similarity_order, split_hot)."""
    if not isinstance(manifest, dict):
        manifest = load_manifest(manifest)
    fp = labels_fingerprint(np.asarray(labels))
    if fp != manifest["clusters"]["labels_fingerprint"]:
        raise ValueError(f"these labels (fingerprint {fp}) are not the ones the selection used "
                         f"({manifest['clusters']['labels_fingerprint']})")
    spec = from_dict(SelectionSpec, manifest["spec"])
    led = manifest["ledger"]
    script = _ScriptedBans(led.get("ban_changes", []), led["pinned"], led["rejected"])
    run = SelectionRun(labels, oracle, spec, ledger=script,
                       n_clusters=manifest["counts"]["k"], features=features)
    script.run = run
    run.run_to_end()
    final = LedgerView(frozenset(led["banned"]), frozenset(led["pinned"]),
                       frozenset(led["rejected"]))
    return run.selected(final)
