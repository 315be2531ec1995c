"""Form widgets built from a settings dataclass's field declarations (`config.field_info`).

The label, help, choices (with their labels) and range of a widget are those the CLI flags
and the TOML rules use, so the app cannot drift from them. The spec still checks the values
when it is built from the form, with the same one-line message as a flag or a TOML file.
"""

from __future__ import annotations

from typing import Any

from clusterucb_core.config import field_info


def widget(where: Any, cls: type, name: str, value: Any, key: str | None = None) -> Any:
    """The widget for field `name` of `cls` in container `where` (st, a column, a form)."""
    info = field_info(cls, name)
    label, help_ = info["label"], _sentence(info["help"])
    if info["options"]:
        options = list(info["options"])
        labels = info["labels"]
        return where.selectbox(label, options, index=options.index(value) if value in options
                               else 0, format_func=lambda o: labels.get(o, o), help=help_,
                               key=key)
    if info["type"] is bool:
        return where.checkbox(label, value=bool(value), help=help_, key=key)
    if info["type"] is int:
        lo = None if info["lo"] is None else int(info["lo"]) + int(info["lo_open"])
        hi = None if info["hi"] is None else int(info["hi"]) - int(info["hi_open"])
        return int(where.number_input(label, min_value=lo, max_value=hi, value=int(value),
                                      step=1, help=help_, key=key))
    fraction = info["hi"] == 1
    step = 0.01 if fraction else 0.1
    lo = info["lo"]
    if lo is not None and info["lo_open"]:
        lo = lo + step / 10
    hi = info["hi"]
    if hi is not None and info["hi_open"]:
        hi = hi - step / 10
    return float(where.number_input(label, min_value=None if lo is None else float(lo),
                                    max_value=None if hi is None else float(hi),
                                    value=float(value), step=step,
                                    format="%.3f" if fraction else "%.2f", help=help_, key=key))


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")
