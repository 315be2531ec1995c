"""Where a pool or target comes from, beyond one plain local file: a Hugging Face Hub dataset,
a gzip-compressed file, or a folder of Parquet shards.

Hub datasets are named by a URI (the syntax `clusterucb validate`, `--pool`, the TOML `pool =`
and the app's path box all accept):

    hf://ORG/NAME                              the dataset's only split, or its "train" split
    hf://ORG/NAME?config=CFG&split=SPLIT&revision=REV     any of the three, in any order
    ORG/NAME                                   the same as hf://ORG/NAME, when no such local
                                               path exists

`resolve(text)` turns any of these into a local path the readers already know: a Hub dataset
is loaded with `datasets.load_dataset` (its own cache, so `HF_HUB_OFFLINE=1` /
`HF_DATASETS_OFFLINE=1` work from a cache filled earlier) and saved once with `save_to_disk`
under `cache_root()/hub` (env `CLUSTERUCB_CACHE`, default `~/.cache/clusterucb`), keyed by
the dataset's fingerprint. A `.gz` file is decompressed once under `cache_root()/gunzip`, so
records keep byte offsets into a plain file. The pool then has a stable local path for the
workspace, the export of its original rows and the manifest, which also records the origin.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

SCHEME = "hf://"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
_HUB_KEYS = ("config", "split", "revision")
ORIGIN_FILE = "clusterucb_origin.json"  # written next to a materialised hub dataset


class SourceError(ValueError):
    """A pool or target location that cannot be read (one-line message)."""


@dataclass(frozen=True)
class HubRef:
    repo: str
    config: str | None = None
    split: str | None = None
    revision: str | None = None
    bare: bool = field(default=False, compare=False)  # written ORG/NAME, without hf://

    @property
    def uri(self) -> str:
        query = urlencode({k: getattr(self, k) for k in _HUB_KEYS if getattr(self, k)})
        return f"{SCHEME}{self.repo}" + (f"?{query}" if query else "")


def parse_hub(text: str | os.PathLike) -> HubRef | None:
    """The Hub reference named by `text`, or None when `text` is a local path."""
    s = str(text).strip()
    if s.startswith(SCHEME):
        parts = urlsplit(s)
        repo = (parts.netloc + parts.path).strip("/")
        repo = repo.removeprefix("datasets/")
        if not _HUB_ID.match(repo):
            raise SourceError(f"{s!r} is not a hub dataset: expected hf://ORG/NAME"
                              "[?config=C&split=S&revision=R]")
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = sorted(set(query) - set(_HUB_KEYS))
        if unknown:
            raise SourceError(f"{s!r}: unknown option(s) {', '.join(unknown)}; use "
                              f"{', '.join(_HUB_KEYS)}")
        opts = {k: (query[k][-1] or None) for k in _HUB_KEYS if k in query}
        return HubRef(repo, **opts)
    if _HUB_ID.match(s) and not Path(s).expanduser().exists():
        return HubRef(s, bare=True)
    return None


def cache_root() -> Path:
    """Where Hub datasets and decompressed files are kept (env CLUSTERUCB_CACHE)."""
    return Path(os.environ.get("CLUSTERUCB_CACHE",
                               Path.home() / ".cache" / "clusterucb")).expanduser()


def load_hub(ref: HubRef) -> Any:
    """The split of a Hub dataset as a `datasets.Dataset`."""
    import datasets

    try:
        ds = datasets.load_dataset(ref.repo, ref.config, split=ref.split,
                                   revision=ref.revision)
    except (ConnectionError, FileNotFoundError) as exc:
        what = (f"{ref.repo}: no such file or folder, and no Hub dataset of that name could be "
                "loaded" if ref.bare else f"{ref.uri}: cannot load from the Hub or its local "
                "cache")
        raise SourceError(f"{what} ({type(exc).__name__}: {str(exc).splitlines()[0]})"
                          ) from None
    except ValueError as exc:  # e.g. an unknown config or split
        raise SourceError(f"{ref.uri}: {str(exc).splitlines()[0]}") from None
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds
        raise SourceError(f"{ref.uri}: {type(exc).__name__}: {str(exc).splitlines()[0]}"
                          ) from None
    if isinstance(ds, datasets.DatasetDict):
        splits = list(ds)
        if "train" in ds:
            ds = ds["train"]
        elif len(splits) == 1:
            ds = ds[splits[0]]
        else:
            raise SourceError(f"{ref.uri} has splits {', '.join(splits)} and no 'train': "
                              "choose one with ?split=NAME")
    return ds


def materialise(ref: HubRef, root: Path | None = None) -> Path:
    """A `save_to_disk` folder of the Hub dataset (made once per dataset fingerprint)."""
    ds = load_hub(ref)
    slug = re.sub(r"[^\w.-]+", "_", ref.uri[len(SCHEME):])
    folder = (root or cache_root() / "hub") / f"{slug}-{ds._fingerprint[:16]}"
    if (folder / ORIGIN_FILE).exists():
        return folder
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    ds.save_to_disk(str(tmp))
    (tmp / ORIGIN_FILE).write_text(json.dumps({"hub": ref.uri, "repo": ref.repo,
                                               "config": ref.config, "split": ref.split,
                                               "revision": ref.revision}))
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder


def resolve(text: str | os.PathLike) -> Path:
    """A local path for `text`: itself, the materialised Hub dataset it names, or the
    decompressed copy of a `.gz` file."""
    ref = parse_hub(text)
    if ref is not None:
        return materialise(ref)
    path = Path(text).expanduser()
    if path.is_file() and path.suffix.lower() == ".gz":
        return gunzip(path)
    return path


def origin(path: Path) -> dict[str, Any]:
    """Where a materialised folder or a decompressed file came from ({"hub": uri} or
    {"gzip": path}); {} for a path the user gave directly."""
    path = Path(path)
    f = (path if path.is_dir() else path.parent) / ORIGIN_FILE
    if not f.is_file():
        return {}
    try:
        data = json.loads(f.read_text())
    except (OSError, ValueError):
        return {}
    return {k: data[k] for k in ("hub", "gzip") if isinstance(data, dict) and data.get(k)}


def source_facts(path: Path) -> dict[str, Any]:
    """For a manifest: the hub URI or gzip file a pool came from, and its declared licence."""
    o = origin(path)
    return {"hub": o.get("hub"), "gzip": o.get("gzip"),
            "license": license_of(path) if Path(path).is_dir() else None}


def note(path: Path) -> str | None:
    """A line for the pool's notes saying where it came from, when not given directly."""
    o = origin(path)
    if o.get("hub"):
        return f"read from the Hub: {o['hub']} (saved at {path})"
    if o.get("gzip"):
        return f"decompressed from {o['gzip']} (to {path})"
    return None


def license_of(path: Path) -> str | None:
    """The licence a `datasets` folder declares (its dataset_info.json), else None."""
    path = Path(path)
    for info in (path / "dataset_info.json", *sorted(path.glob("*/dataset_info.json"))):
        if info.is_file():
            try:
                lic = json.loads(info.read_text()).get("license")
            except (OSError, ValueError, AttributeError):
                continue
            if lic:
                return str(lic)
    return None


# --------------------------------------------------------------------------- files
def gunzip(path: Path, root: Path | None = None) -> Path:
    """The decompressed copy of a `.gz` file (made once per file version), so the readers
    keep byte offsets into a plain file and the export re-reads records from it."""
    path = Path(path).resolve()
    st = path.stat()
    key = hashlib.sha256(f"{path}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    folder = (root or cache_root() / "gunzip") / key
    out = folder / path.with_suffix("").name
    if (folder / ORIGIN_FILE).exists() and out.is_file():
        return out
    tmp = folder.with_name(f".{key}.{os.getpid()}.part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with gzip.open(path, "rb") as src, open(tmp / out.name, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except (OSError, EOFError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SourceError(f"{path}: not a readable gzip file ({exc})") from None
    (tmp / ORIGIN_FILE).write_text(json.dumps({"gzip": str(path)}))
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return out


def parquet_shards(folder: Path) -> list[Path]:
    """The Parquet files of a folder of shards (searched recursively), in path order; [] for
    a `datasets` save_to_disk folder or a folder without Parquet files."""
    folder = Path(folder)
    if any((folder / n).exists() for n in ("dataset_info.json", "state.json",
                                           "dataset_dict.json")):
        return []
    return sorted(p for p in folder.rglob("*.parquet")
                  if p.is_file() and not any(part.startswith(".") for part in
                                             p.relative_to(folder).parts))


def parquet_table(path: Path) -> Any:
    """A Parquet file, or a folder of shards concatenated in path order, as one Arrow table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if path.is_dir():
        shards = parquet_shards(path)
        if not shards:
            raise SourceError(f"{path}: no Parquet files in this folder")
        return pa.concat_tables([pq.read_table(p) for p in shards], promote_options="default")
    return pq.read_table(path)
