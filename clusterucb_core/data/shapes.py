"""Chat shapes: `messages`, `alpaca`, `sharegpt`, `prompt_completion` records turned into one
canonical list of {"role", "content"} turns, with the reason when a record cannot be.
"""

from __future__ import annotations

import json
from typing import Any

from clusterucb_core.data.schema import CANON_ROLES, ROLE_ALIASES


# --------------------------------------------------------------------------- shapes
def shape_of(obj: dict) -> str | None:
    if "messages" in obj:
        return "messages"
    if "conversations" in obj:
        return "sharegpt"
    if "instruction" in obj and "output" in obj:
        return "alpaca"
    if "prompt" in obj and "completion" in obj:
        return "prompt_completion"
    return None


_REQUIRED = {"messages": "'messages'", "sharegpt": "'conversations'",
             "alpaca": "'instruction' and 'output'",
             "prompt_completion": "'prompt' and 'completion'"}


def _maybe_json_cell(value: Any, json_cells: bool) -> Any:
    if json_cells and isinstance(value, str) and value.lstrip().startswith("["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _turns(value: Any, what: str) -> tuple[list[dict] | None, str | None]:
    """Validate a list of turns ({role, content} or {from, value}) -> canonical messages."""
    if type(value) is list and value:
        # fast path: already canonical (the common case; reuses the parsed dicts)
        for m in value:
            if type(m) is not dict or len(m) != 2 or type(m.get("content")) is not str \
                    or type(m.get("role")) is not str or m["role"] not in CANON_ROLES:
                break
        else:
            return value, None
    if not isinstance(value, list):
        return None, f"'{what}' must be a list of turns, got {type(value).__name__}"
    if not value:
        return None, f"'{what}' is empty"
    out = []
    for k, m in enumerate(value, start=1):
        if not isinstance(m, dict):
            return None, f"{what}[{k}] must be an object, got {type(m).__name__}"
        if "role" in m or "content" in m:
            role, content, rk, ck = m.get("role"), m.get("content"), "role", "content"
        else:
            role, content, rk, ck = m.get("from"), m.get("value"), "from", "value"
        if role is None:
            return None, f"{what}[{k}] has no '{rk}'"
        if not isinstance(role, str):
            return None, f"{what}[{k}].{rk} must be a string, got {type(role).__name__}"
        canon = ROLE_ALIASES.get(role.strip().lower())
        if canon is None:
            return None, f"{what}[{k}] has unknown role {role!r} (known: system, user, " \
                         "assistant, human, gpt)"
        if content is None and ck not in m:
            return None, f"{what}[{k}] has no '{ck}'"
        if not isinstance(content, str):
            return None, f"{what}[{k}].{ck} must be a string, got {type(content).__name__}"
        out.append({"role": canon, "content": content})
    return out, None


def to_messages(obj: dict, shape: str, json_cells: bool) -> tuple[list[dict] | None, str | None]:
    if shape in ("messages", "sharegpt"):
        key = "messages" if shape == "messages" else "conversations"
        if key not in obj:
            return None, f"missing field '{key}' (shape {shape})"
        return _turns(_maybe_json_cell(obj[key], json_cells), key)
    if shape == "alpaca":
        for k in ("instruction", "output"):
            if k not in obj:
                return None, f"missing field '{k}' (shape alpaca)"
        ins, inp, out = obj["instruction"], obj.get("input"), obj["output"]
        sysmsg = obj.get("system")
        for k, v in (("instruction", ins), ("output", out)):
            if not isinstance(v, str):
                return None, f"'{k}' must be a string, got {type(v).__name__}"
        if inp is not None and not isinstance(inp, str):
            return None, f"'input' must be a string, got {type(inp).__name__}"
        user = ins + ("\n\n" + inp if inp and inp.strip() else "")
        msgs = []
        if isinstance(sysmsg, str) and sysmsg.strip():
            msgs.append({"role": "system", "content": sysmsg})
        msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": out}]
        return msgs, None
    # prompt_completion
    for k in ("prompt", "completion"):
        if k not in obj:
            return None, f"missing field '{k}' (shape prompt_completion)"
    prompt = _maybe_json_cell(obj["prompt"], json_cells)
    completion = _maybe_json_cell(obj["completion"], json_cells)
    if isinstance(prompt, str):
        msgs = [{"role": "user", "content": prompt}]
    else:
        msgs, err = _turns(prompt, "prompt")
        if err:
            return None, err
    if isinstance(completion, str):
        return msgs + [{"role": "assistant", "content": completion}], None
    more, err = _turns(completion, "completion")
    if err:
        return None, err
    return msgs + more, None


def check_chat(msgs: list[dict]) -> str | None:
    n_assistant = 0
    for k, m in enumerate(msgs, start=1):
        if m["role"] == "assistant":
            n_assistant += 1
            if not m["content"].strip():
                return f"empty assistant turn (turn {k}): nothing to train on"
    if n_assistant == 0:
        return "no assistant turn: nothing to train on"
    return None
