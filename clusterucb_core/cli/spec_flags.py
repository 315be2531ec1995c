"""Command-line flags built from a settings dataclass (as HfArgumentParser does for its own).

Each flag's type, choices, range and help come from the field's declaration in config.py
(`config.field_info`), so a setting is described once for TOML, the CLI and the app. Flags
default to None, so a command can tell the settings a user gave from those left alone.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from clusterucb_core.config import field_info


def add_spec_flags(parser: argparse.ArgumentParser, cls: type, defaults: Any,
                   names: list[str] | None = None) -> None:
    """One `--field-name` flag per field of `cls` (or of `names`), with `defaults` in the help."""
    for name in names or [f.name for f in dataclasses.fields(cls)]:
        info = field_info(cls, name)
        help_ = info["help"] + (f"; {info['range']}" if info["range"] else "")
        kw: dict[str, Any] = {"dest": name, "default": None,
                              "help": f"{help_} (default {getattr(defaults, name)})"}
        if info["options"]:
            kw["choices"] = info["options"]
        elif info["type"] is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif info["type"] in (int, float):
            kw["type"] = info["type"]
        parser.add_argument("--" + name.replace("_", "-"), **kw)


def spec_from_flags(args: argparse.Namespace, cls: type, base: Any) -> tuple[Any, list[str]]:
    """`base` with every flag of `cls` the user gave; and the names of those flags."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
             if getattr(args, f.name, None) is not None}
    return dataclasses.replace(base, **given), sorted(given)
