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
under `hub_cache()` (env `CLUSTERUCB_HUB_CACHE`, default `~/.cache/clusterucb/hub`), keyed by
the dataset's fingerprint. The pool then has a stable local path for the workspace, the
export of its original rows and the manifest, which also records the hub URI.
"""

from __future__ import annotations

import gzip
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
        if repo.startswith("datasets/"):
            repo = repo[len("datasets/"):]
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


def hub_cache() -> Path:
    return Path(os.environ.get("CLUSTERUCB_HUB_CACHE",
                               Path.home() / ".cache" / "clusterucb" / "hub")).expanduser()


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
    folder = (root or hub_cache()) / f"{slug}-{ds._fingerprint[:16]}"
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
    """A local path for `text`: itself, or the materialised Hub dataset it names."""
    ref = parse_hub(text)
    return Path(text).expanduser() if ref is None else materialise(ref)


def origin(path: Path) -> str | None:
    """The hub URI a materialised folder came from, else None."""
    f = Path(path) / ORIGIN_FILE
    if not f.is_file():
        return None
    try:
        return str(json.loads(f.read_text())["hub"])
    except (OSError, ValueError, KeyError, TypeError):
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
def is_gzip(path: Path) -> bool:
    return Path(path).suffix.lower() == ".gz"


def inner_name(path: Path) -> Path:
    """`pool.jsonl.gz` -> `pool.jsonl` (the name that says the format)."""
    path = Path(path)
    return path.with_suffix("") if is_gzip(path) else path


def read_bytes(path: Path) -> bytes:
    """The file's content, decompressed when it is gzip."""
    data = Path(path).read_bytes()
    if is_gzip(path) or data[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise SourceError(f"{path}: not a readable gzip file ({exc})") from None
    return data


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
