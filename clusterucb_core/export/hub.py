"""Publishing an export folder to the Hugging Face Hub as a dataset repository.

`stage_for_hub(export_dir, staging)` lays out what would be uploaded:

    README.md                 the dataset card: a YAML header (licence, tags, size, the data
                              files of the default config) and a body built from the manifest:
                              source pool and fingerprint, target, model, settings, counts
    data/train.parquet        the selection (the export's `dataset/` folder as Parquet: row, id,
                              source, messages, score, cluster, cluster_label, round_drawn,
                              pinned, tags)
    manifest.json             the export's manifest, for provenance and reproduction
    selection.parquet         every drawn, pinned or rejected row with its status

`push_to_hub(export_dir, repo_id)` stages into a temporary folder and uploads it in one commit
with `huggingface_hub.HfApi` (token from `HF_TOKEN` or `huggingface-cli login`). A staged
folder loads with `datasets.load_dataset(folder)`, as the repository will.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from clusterucb_core.export.files import load_manifest, verify_export

_SIZES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
          (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"))


def size_category(n: int) -> str:
    for limit, name in _SIZES:
        if n < limit:
            return name
    return "n>10M"


def _yaml_str(s: Any) -> str:
    return json.dumps(str(s), ensure_ascii=False)  # a JSON string is a valid YAML scalar


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def card_facts(manifest: dict[str, Any]) -> dict[str, Any]:
    """The facts a card states, pulled from wherever the manifest's writer recorded them."""
    extra = manifest.get("extra") or {}
    config = extra.get("config") or {}
    pool = manifest.get("pool") or {}
    oracle = manifest.get("oracle") or {}
    target = (extra.get("target") or config.get("target") or oracle.get("target"))
    model = (extra.get("model") or _get(config, "model", "name_or_path"))
    return {
        "pool": pool.get("hub") or Path(str(pool.get("path", "?"))).name,
        "pool_fingerprint": pool.get("fingerprint"),
        "pool_format": pool.get("format"),
        "license": pool.get("license"),
        "target": target, "target_fingerprint": oracle.get("target"),
        "model": model, "run_id": manifest.get("run_id"),
        "clusters": _get(manifest, "clusters", "name"),
        "spec": manifest.get("spec") or {}, "counts": manifest.get("counts") or {},
        "tags": _get(manifest, "tags", "counts") or {},
        "created": manifest.get("created"),
        "version": _get(manifest, "versions", "clusterucb-studio"),
        "audit": manifest.get("audit"), "metrics": manifest.get("metrics"),
        "subtask_note": _get(extra, "subtask_note", "sentence"),
    }


def quality_lines(f: dict[str, Any]) -> list[str]:
    """The card's "How good is it" section: the audit meter's estimates of the recall and
    mass share of exhaustive LESS's top-p, the measured ones when every row was scored, and a
    subtask takeover (empty when none is known)."""
    out = []
    audit, metrics = f.get("audit"), f.get("metrics")
    if metrics:
        out.append(f"* measured against every row's score: recall of the exhaustive top-p "
                   f"{metrics['recall_of_exhaustive_top_p']:.2f}, score mass "
                   f"{metrics['mass_share_of_exhaustive_top_p']:.2f}.")
    if audit:
        r, m = audit["recall_estimate"], audit["mass_share_estimate"]
        a = audit.get("audit") or {}
        out.append(f"* estimated without scoring every row (audit meter, {a.get('level', 0.9):.0%}"
                   f" interval): recall of the exhaustive top-p {r['value']:.2f} "
                   f"[{r['low']:.2f}, {r['high']:.2f}], score mass {m['value']:.2f} "
                   f"[{m['low']:.2f}, {m['high']:.2f}]; checking it would cost "
                   f"{a.get('unscored_rows', 0):,} more gradients.")
    if f.get("subtask_note"):
        out.append(f"* {f['subtask_note']}")
    return ["## How good is it", "", *out, ""] if out else []


def dataset_card(manifest: dict[str, Any], repo_id: str | None = None) -> str:
    """README.md for the Hub: YAML header + what was selected, from what, and how."""
    f = card_facts(manifest)
    counts = f["counts"]
    n = int(counts.get("n_selected", 0))
    head = ["---"]
    if f["license"]:
        head.append(f"license: {_yaml_str(f['license'])}")
    head += ["tags:", "- clusterucb", "- data-selection", "- instruction-tuning",
             "size_categories:", f"- {size_category(n)}",
             "configs:", "- config_name: default", "  data_files:", "  - split: train",
             "    path: data/train.parquet", "---", ""]
    title = repo_id or f"ClusterUCB selection {f['run_id'] or ''}".strip()
    spec = f["spec"]
    body = [
        f"# {title}", "",
        (f"{n:,} instruction-tuning rows chosen from the pool `{f['pool']}` by ClusterUCB "
         "Studio data selection: LESS gradient-influence scores against a target set, with the "
         "scoring budget spent by a UCB bandit over clusters of the pool."), "",
        "## Provenance", "",
        "| | |", "|---|---|",
        f"| source pool | `{f['pool']}` ({f['pool_format']}) |",
        f"| pool fingerprint (sha256) | `{f['pool_fingerprint']}` |",
        f"| licence of the pool | {f['license'] or 'not declared by the pool'} |",
        f"| target | `{f['target'] or 'not recorded'}` |",
        f"| model | `{f['model'] or 'not recorded'}` |",
        f"| clustering | `{f['clusters']}` |",
        f"| run | `{f['run_id']}` |",
        f"| made | {f['created']} with clusterucb-studio {f['version']} |", "",
        "## Settings", "",
        "| setting | value |", "|---|---|",
        *[f"| {k} | `{v}` |" for k, v in spec.items()], "",
        "## Counts", "",
        "| | rows |", "|---|---|",
        *[f"| {k.replace('_', ' ')} | {v:,} |" if isinstance(v, int) else
          f"| {k.replace('_', ' ')} | {v} |" for k, v in counts.items()], "",
    ]
    body += quality_lines(f)
    if f["tags"]:
        body += ["## Tags", "", "| tag | rows |", "|---|---|",
                 *[f"| {t} | {c:,} |" for t, c in f["tags"].items()], ""]
    body += ["## Files", "",
             ("* `data/train.parquet`: the selection (`messages` in chat form, `score`, "
              "`cluster`, `cluster_label`, `round_drawn`, `pinned`, `tags`)."),
             "* `selection.parquet`: every drawn, pinned or rejected row and its status.",
             ("* `manifest.json`: every setting, seed, fingerprint and package version, "
              "enough to reproduce the selection."), ""]
    return "\n".join(head + body)


def stage_for_hub(export_dir: str | Path, staging: str | Path,
                  repo_id: str | None = None) -> Path:
    """Write the repository's files into `staging` (see the module docstring)."""
    import datasets

    export_dir, staging = Path(export_dir), Path(staging)
    manifest = load_manifest(export_dir)
    bad = verify_export(export_dir)
    if bad:
        raise ValueError(f"{export_dir}: files changed since the export ({', '.join(bad[:5])}); "
                         "export again before pushing")
    if not (export_dir / "dataset").is_dir():
        raise FileNotFoundError(f"{export_dir} has no dataset/ folder: export with the "
                                "datasets folder to push to the Hub")
    (staging / "data").mkdir(parents=True, exist_ok=True)
    datasets.load_from_disk(str(export_dir / "dataset")).to_parquet(
        str(staging / "data" / "train.parquet"))
    (staging / "README.md").write_text(dataset_card(manifest, repo_id), encoding="utf-8")
    for name in ("manifest.json", "selection.parquet"):
        shutil.copyfile(export_dir / name, staging / name)
    return staging


def push_to_hub(export_dir: str | Path, repo_id: str, *, private: bool = False,
                token: str | None = None, api: Any = None) -> str:
    """Create (or reuse) the dataset repository and upload the staged files in one commit;
    returns the repository URL."""
    if "/" not in repo_id.strip("/"):
        raise ValueError(f"a Hub repository is ORG/NAME or USER/NAME, got {repo_id!r}")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="clusterucb-hub-") as tmp:
        staged = stage_for_hub(export_dir, tmp, repo_id)
        url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(folder_path=str(staged), repo_id=repo_id, repo_type="dataset",
                          commit_message="Upload a ClusterUCB selection")
    return str(url)
