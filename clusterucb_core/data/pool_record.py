"""What a workspace records about the pool it was given, and what it says about dropped rows.

Every entry point that reads a pool for a workspace (`Pipeline.pool`, and `features`, `warmup`,
`cluster` given `--pool`) records it the same way, so a later stage (`select`, `export`, the
app) finds it without being told again. A pool with problems gets its full report written
beside the workspace's other files, and the one line that is printed names how many rows were
dropped, the first of their line numbers, and where that report is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clusterucb_core.runtime import atomic

REPORTS_DIR = "pool_reports"
FIRST_LINES = 10  # line numbers of dropped rows kept in the summary and printed


def pool_meta(pool: Any, id_field: str = "", source_field: str = "") -> dict[str, Any]:
    """The `pool` entry of workspace.json (what `select` records in a run and `export` reads)."""
    return {"path": str(pool.path), "fingerprint": pool.fingerprint, "format": pool.format,
            "shape": pool.shape, "id_field": id_field, "source_field": source_field,
            "n_rows": len(pool)}


def record_pool(ws: Any, pool: Any, id_field: str = "", source_field: str = "") -> None:
    ws.update_meta(pool=pool_meta(pool, id_field, source_field))


def dropped(report: Any) -> dict[str, Any]:
    """Dropped records (errors: not in the pool) apart from the kept ones with warnings."""
    lines = sorted({p.line for p in report.errors})
    return {"dropped_rows": int(report.n_records - report.n_valid),
            "dropped_lines_first": lines[:FIRST_LINES],
            "kept_with_warnings": len({p.line for p in report.warnings})}


def save_report(root: Path, pool: Any) -> Path | None:
    """Every problem, one per line, in W/pool_reports/<fingerprint>.txt (None: no problems)."""
    report = pool.report
    if not report.problems:
        return None
    path = Path(root) / REPORTS_DIR / f"{pool.fingerprint[:16]}.txt"
    head = (f"pool {pool.path}\nrecords {report.n_records}, kept {report.n_valid}, "
            f"dropped {report.n_records - report.n_valid}\n")
    atomic.write_text(path, head + "\n".join(report.lines(limit=None)) + "\n")
    return path


def problems_summary(root: Path, pool: Any) -> dict[str, Any]:
    """The summary JSON's `pool_problems`: the dropped count, their first line numbers, the
    kept-with-warnings count and the full report's path (written here)."""
    path = save_report(root, pool)
    return {**dropped(pool.report), "report": None if path is None else str(path)}


def problems_sentence(summary: dict[str, Any]) -> str:
    """'' for a clean pool, else e.g. '52 rows dropped (lines 3, 17, ...), 5 kept with
    warnings; every problem: W/pool_reports/ab12.txt'."""
    if not summary.get("report"):
        return ""
    n, lines = summary["dropped_rows"], summary["dropped_lines_first"]
    shown = ", ".join(map(str, lines)) + (", ..." if n > len(lines) else "")
    parts = [f"{n} row(s) dropped" + (f" (line {shown})" if lines else "")]
    if summary["kept_with_warnings"]:
        parts.append(f"{summary['kept_with_warnings']} kept with warnings")
    return ", ".join(parts) + f"; every problem: {summary['report']}"
