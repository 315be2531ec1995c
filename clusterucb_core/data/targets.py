"""Target validation sets: what the selected data should help with (docs/METHOD.md section 2b).

A target is a list of (subtask, prompt, completion) examples; only the completion is trained on
when its gradient is taken (`formatting.encode_prompt_completion`). Influence is the max over
subtasks of the mean cosine, so every subtask must have the same number of examples (LESS's
layouts do); unequal counts are an error unless `trim=True`, which keeps the first `min` of each
subtask and reports how many were dropped in `TargetSet.trimmed`.

Kinds:
- ``mmlu``: a folder with ``dev/{subject}_dev.csv`` (or the ``*_dev.csv`` files themselves);
  rows ``question,A,B,C,D,answer``, no header; subjects sorted. Prompt (LESS, Tulu):
  ``<|user|>\\nThe following are multiple choice questions (with answers) about {subject}.\\n\\n
  {question}\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:\\n<|assistant|>\\nThe answer is:``,
  completion ``" " + answer``. As in LESS's ``format_subject`` the subject is the file name's
  words each preceded by a space, so the text reads "about  abstract algebra." (two spaces): we
  keep LESS's exact text so our target gradients are LESS's. Cells are read as text (LESS reads
  them with pandas, which turns e.g. "3.50" into "3.5"; on the real dev files this changes
  nothing). All rows of a file are used (the real files have 5 each, LESS's k).
- ``bbh``: ``bbh-three-shot.json`` (task -> text): the text's last three blank-line-separated
  blocks are examples, the rest the task description; each example is asked with the other two
  as in-context examples:
  ``<|user|>\\n{description}\\n\\n{ex}\\n\\n{ex}\\n\\n{question}\\n<|assistant|>\\nA:``,
  completion = the answer text after "\\nA:" (LESS splits each block at "\\nA:"; a block with
  several is split at the first).
- ``tydiqa``: ``tydiqa-one-shot.json`` (language -> [example]); LESS's per-language
  instruction and labels (from LESS ``get_validation_dataset.py``, itself from open-instruct):
  ``<|user|>\\n{instruction}{Passage:} {context}\\n{Question:} {question}``
  ``\\n<|assistant|>\\n{Answer:}``
  (LESS puts no separator between the instruction and "Passage:"; kept), completion
  ``" " + first answer text``. ``tydiqa-one-shot-zh.json`` uses the Chinese labels, as LESS.
- ``pool``: any pool file `pool.load_pool` reads, with a ``subtask`` field on every record:
  prompt = Tulu rendering of the turns before the last assistant turn + ``<|assistant|>\\n``,
  completion = the last assistant turn's content (no EOS, like LESS's targets).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clusterucb_core.config import DEMO_DIR
from clusterucb_core.data.formatting import encode_prompt_completion, render_tulu_prompt
from clusterucb_core.data.load import load_pool
from clusterucb_core.data.pool import PoolError
from clusterucb_core.data.sources import resolve

KINDS = ("mmlu", "bbh", "tydiqa", "pool")

# LESS less/data_selection/get_validation_dataset.py (from open-instruct eval/tydiqa/run_eval.py)
TYDIQA_TEMPLATES: dict[str, tuple[str, str, str, str]] = {
    "english": ("Answer the following question based on the information in the given passage.",
                "Passage:", "Question:", "Answer:"),
    "arabic": ("أجب على السؤال التالي بناءً على المعلومات في المقطع المعطى.", "المقطع:",
               "السؤال:", "الإجابة:"),
    "bengali": ("প্রদত্ত অধ্যায়ের তথ্যের উপর ভিত্তি করে নিম্নলিখিত প্রশ্নের উত্তর দিন।", "অধ্যায়:",
                "প্রশ্ন:", "উত্তর:"),
    "finnish": ("Vastaa seuraavaan kysymykseen annetun kappaleen tiedon perusteella.",
                "Kappale:", "Kysymys:", "Vastaus:"),
    "indonesian": ("Jawab pertanyaan berikut berdasarkan informasi di bagian yang diberikan.",
                   "Bagian:", "Pertanyaan:", "Jawaban:"),
    "korean": ("주어진 문단의 정보에 기반하여 다음 질문에 답하십시오.", "문단:", "질문:", "답변:"),
    "russian": ("Ответьте на следующий вопрос на основе информации в данном отрывке.",
                "Отрывок:", "Вопрос:", "Ответ:"),
    "swahili": ("Jibu swali lifuatalo kulingana na habari kwenye kifungu kilichotolewa.",
                "Kifungu:", "Swali:", "Jibu:"),
    "telugu": ("ఇచ్చిన పేరాలోని సమాచారం ఆధారంగా కింది ప్రశ్నకు సమాధానం ఇవ్వండి.", "పేరా:",
               "ప్రశ్న:", "సమాధానం:"),
}
TYDIQA_ZH = ("根据所给文章中的信息回答以下问题。", "文章:", "问题:", "答案:")


class TargetError(ValueError):
    pass


@dataclass
class TargetExample:
    subtask: str
    prompt: str
    completion: str


@dataclass
class TargetSet:
    name: str
    kind: str
    examples: list[TargetExample]
    fingerprint: str
    trimmed: dict[str, int] = field(default_factory=dict)  # subtask -> examples dropped
    path: Path | None = None

    @property
    def subtasks(self) -> list[str]:
        return sorted({e.subtask for e in self.examples})

    def counts(self) -> dict[str, int]:
        c = Counter(e.subtask for e in self.examples)
        return {s: c[s] for s in self.subtasks}

    def subtask_ids(self):
        """Integer code of each example's subtask (index into `subtasks`), as numpy int64."""

        index = {s: i for i, s in enumerate(self.subtasks)}
        return np.array([index[e.subtask] for e in self.examples], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.examples)

    def encode(self, tokenizer, max_length: int):
        """Encoded examples (prompt left-truncated when too long) and how many were cut."""

        encs = [encode_prompt_completion(e.prompt, e.completion, tokenizer, max_length)
                for e in self.examples]
        return encs, sum(e.truncated for e in encs)


# --------------------------------------------------------------------------- entry points
def load_target(path: str | Path, kind: str = "auto", trim: bool = False) -> TargetSet:
    """Read a target set (LESS layouts or a pool file with `subtask`); see module doc."""

    path = resolve(path)  # a hub dataset (hf://ORG/NAME?split=S) becomes a local folder
    if not path.exists():
        raise FileNotFoundError(f"target not found: {path}")
    if kind not in ("auto",) + KINDS:
        raise TargetError(f"unknown target kind {kind!r}; choose one of: auto, {', '.join(KINDS)}")
    if kind == "auto":
        kind, path = _detect(path)
    else:
        path = _resolve(path, kind)
    if kind == "mmlu":
        examples, name = _mmlu(path), "mmlu"
    elif kind == "bbh":
        examples, name = _bbh(path), "bbh"
    elif kind == "tydiqa":
        examples, name = _tydiqa(path), "tydiqa"
    else:
        examples, name = _pool_target(path), path.stem if path.is_file() else path.name
    if not examples:
        raise TargetError(f"{path}: no target examples found")
    examples, trimmed = _equalize(examples, trim, path)
    blob = json.dumps([kind] + [[e.subtask, e.prompt, e.completion] for e in examples],
                      ensure_ascii=False).encode("utf-8", "surrogatepass")
    return TargetSet(name=name, kind=kind, examples=examples,
                     fingerprint=hashlib.sha256(blob).hexdigest(), trimmed=trimmed, path=path)


def bundled_targets() -> dict[str, Path]:
    """The demo targets shipped in sample_data/targets/ (name -> path); {} when absent."""

    folder = DEMO_DIR / "targets"
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.glob("*.jsonl"))}


# --------------------------------------------------------------------------- detection
def _mmlu_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*_dev.csv"))


_LAYOUT_FILES = (("bbh-three-shot.json", "bbh"), ("tydiqa-one-shot.json", "tydiqa"),
                 ("tydiqa-one-shot-zh.json", "tydiqa"))


def _layouts_in(path: Path) -> list[tuple[str, Path]]:
    """LESS layouts directly in `path` (a folder)."""
    found = []
    for sub in (path, path / "dev"):
        if sub.is_dir() and _mmlu_files(sub):
            found.append(("mmlu", sub))
            break
    for name, kind in _LAYOUT_FILES:
        if (path / name).is_file():
            found.append((kind, path / name))
            break
    return found


def _detect(path: Path) -> tuple[str, Path]:
    if path.is_dir():
        found = _layouts_in(path)
        if not found:  # a LESS data root: eval/{mmlu,bbh,tydiqa}
            for sub in ("mmlu", "bbh", "tydiqa", "eval/mmlu", "eval/bbh", "eval/tydiqa"):
                if (path / sub).is_dir():
                    found += _layouts_in(path / sub)
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise TargetError(f"{path} holds several targets ("
                              + ", ".join(f"{k}: {p}" for k, p in found)
                              + "); pass one of them, or kind=")
        from clusterucb_core.data.sources import parquet_shards

        if (path / "dataset_info.json").exists() or (path / "state.json").exists() or \
                (path / "dataset_dict.json").exists() or parquet_shards(path):
            return "pool", path
        raise TargetError(f"{path}: not a target folder (expected MMLU *_dev.csv files, "
                          "bbh-three-shot.json, tydiqa-one-shot.json or a datasets folder)")
    if path.suffix.lower() == ".json":
        try:
            obj = json.loads(path.read_text("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            return "pool", path  # let the pool loader report where the file is broken
        if isinstance(obj, dict) and obj:
            values = list(obj.values())
            if all(isinstance(v, str) for v in values):
                return "bbh", path
            if all(isinstance(v, list) and v and isinstance(v[0], dict) and "context" in v[0]
                   and "question" in v[0] for v in values):
                return "tydiqa", path
    if path.name.endswith("_dev.csv"):
        return "mmlu", path
    return "pool", path


def _resolve(path: Path, kind: str) -> Path:
    if kind == "pool" or not path.is_dir():
        return path
    for sub in (path, path / kind, path / "eval" / kind):
        for k, p in _layouts_in(sub) if sub.is_dir() else []:
            if k == kind:
                return p
    raise TargetError(f"{path}: no {kind} target found in this folder")


# --------------------------------------------------------------------------- LESS layouts
def _mmlu(path: Path) -> list[TargetExample]:
    files = [path] if path.is_file() else _mmlu_files(path)
    if not files:
        raise TargetError(f"{path}: no MMLU *_dev.csv files")
    out: list[TargetExample] = []
    for f in files:
        subject = f.name[: -len("_dev.csv")] if f.name.endswith("_dev.csv") else f.stem
        # LESS format_subject: each word preceded by a space -> "about  abstract algebra."
        subject_text = "".join(" " + w for w in subject.split("_"))
        try:
            text = f.read_bytes().decode("utf-8")  # no newline translation: cells keep \r\n
        except UnicodeDecodeError as exc:
            raise TargetError(f"{f}: not UTF-8 ({exc})") from exc
        rows = [r for r in csv.reader(io.StringIO(text, newline="")) if r]
        for i, row in enumerate(rows, start=1):
            if len(row) < 3:
                raise TargetError(f"{f} row {i}: expected question, choices..., answer; got "
                                  f"{len(row)} fields")
            question, choices, answer = row[0], row[1:-1], row[-1].strip()
            if len(choices) > 26:
                raise TargetError(f"{f} row {i}: too many choices ({len(choices)})")
            prompt = (f"The following are multiple choice questions (with answers) about "
                      f"{subject_text}.\n\n{question}")
            for letter, choice in zip("ABCDEFGHIJKLMNOPQRSTUVWXYZ", choices):
                prompt += f"\n{letter}. {choice}"
            prompt += "\nAnswer:"
            out.append(TargetExample(subject, "<|user|>\n" + prompt +
                                     "\n<|assistant|>\nThe answer is:", " " + answer))
    return out


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except UnicodeDecodeError as exc:
        raise TargetError(f"{path}: not UTF-8 ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise TargetError(f"{path}: bad JSON at line {exc.lineno} column {exc.colno}: "
                          f"{exc.msg}") from exc


def _bbh(path: Path) -> list[TargetExample]:
    data = _load_json(path)
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise TargetError(f"{path}: expected an object mapping task name -> prompt text")
    out: list[TargetExample] = []
    for task, text in data.items():
        blocks = text.split("\n\n")
        if len(blocks) < 4:
            raise TargetError(f"{path}: task {task!r} has {len(blocks)} blank-line-separated "
                              "blocks; expected a description and three examples")
        exes, description = blocks[-3:], "\n\n".join(blocks[:-3])
        split = []
        for k, ex in enumerate(exes, start=1):
            if "\nA:" not in ex:
                raise TargetError(f"{path}: task {task!r} example {k} has no '\\nA:' line")
            q, _, a = ex.partition("\nA:")
            split.append((q, a))
        for i, (question, answer) in enumerate(split):
            icl = "".join(q + "\nA:" + a + "\n\n" for j, (q, a) in enumerate(split) if j != i)
            prompt = ("<|user|>\n" + description.strip() + "\n\n" + icl + question
                      + "\n<|assistant|>\nA:")
            out.append(TargetExample(task, prompt, answer))
    return out


def _tydiqa(path: Path) -> list[TargetExample]:
    data = _load_json(path)
    if not isinstance(data, dict):
        raise TargetError(f"{path}: expected an object mapping language -> [examples]")
    zh = path.name.endswith("-zh.json")
    out: list[TargetExample] = []
    for lang, examples in data.items():
        if zh:
            template = TYDIQA_ZH
        elif lang in TYDIQA_TEMPLATES:
            template = TYDIQA_TEMPLATES[lang]
        else:
            raise TargetError(f"{path}: no TydiQA template for language {lang!r} (known: "
                              f"{', '.join(sorted(TYDIQA_TEMPLATES))})")
        if not isinstance(examples, list) or not examples:
            raise TargetError(f"{path}: {lang!r} must be a non-empty list of examples")
        instruction, p_label, q_label, a_label = template
        for k, ex in enumerate(examples, start=1):
            try:
                context, question = ex["context"], ex["question"]
                answer = ex["answers"][0]["text"]
            except (KeyError, IndexError, TypeError) as exc:
                raise TargetError(f"{path}: {lang!r} example {k} lacks context / question / "
                                  f"answers[0].text ({exc!r})") from exc
            prompt = (instruction + p_label + " " + str(context) + "\n" + q_label + " "
                      + str(question) + "\n")
            out.append(TargetExample(lang, "<|user|>\n" + prompt + "<|assistant|>\n" + a_label,
                                     " " + str(answer)))
    return out


# --------------------------------------------------------------------------- pool files
def _pool_target(path: Path) -> list[TargetExample]:

    try:
        pool = load_pool(path)
    except PoolError as exc:
        raise TargetError(f"target {exc}") from exc
    errors = pool.report.errors
    if errors:  # a target is small and curated: a dropped example would skew its subtask
        raise TargetError(f"{path}: {len(errors)} unusable target records: "
                          + "; ".join(str(p) for p in errors[:10]))
    if "subtask" not in pool.table:
        raise TargetError(f"{path}: a target file needs a 'subtask' field on every record "
                          "(none found)")
    missing = [int(n) for n, s in zip(pool.table["line_no"], pool.table["subtask"])
               if s is None or s == ""]
    if missing:
        raise TargetError(
            f"{path}: {len(missing)} records have no 'subtask' (lines "
            f"{', '.join(map(str, missing[:10]))}{'...' if len(missing) > 10 else ''})"
        )
    out: list[TargetExample] = []
    for subtask, msgs in zip(pool.table["subtask"], pool.table["messages"]):
        last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
        out.append(TargetExample(str(subtask), render_tulu_prompt(msgs[:last]),
                                 msgs[last]["content"]))
    return out


def _equalize(examples: list[TargetExample], trim: bool,
              path: Path) -> tuple[list[TargetExample], dict[str, int]]:
    counts = Counter(e.subtask for e in examples)
    if len(set(counts.values())) <= 1:
        return examples, {}
    low = min(counts.values())
    if not trim:
        detail = ", ".join(f"{s}={n}" for s, n in sorted(counts.items()))
        raise TargetError(f"{path}: subtasks have unequal numbers of examples ({detail}); "
                          f"influence averages per subtask, so they must match. Fix the file "
                          f"or pass trim=True (--trim) to keep the first {low} of each")
    kept: Counter = Counter()
    out = []
    for e in examples:
        if kept[e.subtask] < low:
            kept[e.subtask] += 1
            out.append(e)
    trimmed = {s: n - low for s, n in sorted(counts.items()) if n > low}
    return out, trimmed
