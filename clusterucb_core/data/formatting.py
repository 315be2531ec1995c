"""Chat rendering and tokenisation with assistant-only labels (docs/METHOD.md section 1).

Default rendering is the Tulu format LESS trains with::

    <|system|>\\n{content}\\n
    <|user|>\\n{content}\\n
    <|assistant|>\\n{content}{eos}\\n

concatenated and tokenised once (with the tokenizer's own special tokens, e.g. BOS). Only the
assistant *content plus EOS* carries labels; everything else -- BOS, system and user turns, the
`<|assistant|>\\n` header and the newline after EOS -- is -100.

Which tokens are "assistant tokens" is decided from character offsets (fast tokenizers) and
never from re-tokenising pieces separately, so the mask is exactly the assistant character
spans: a token is trained on iff it *starts* inside an assistant span and covers at least one
character of it. A token that straddles the header/content boundary (rare; only tokenizers that
merge across a newline) belongs to the header and is masked. Slow tokenizers (no offsets) fall
back to tokenising growing prefixes, as open-instruct does.

Truncation of a row longer than `max_length` (`truncation`, docs/METHOD.md section 1):
"keep_answer" (default) drops the oldest prompt tokens (the tokenizer's leading special tokens,
e.g. BOS, stay) so the answer survives, exactly as for target examples; an answer longer than
`max_length` on its own keeps its start and loses its end. "right" keeps the first
`max_length` tokens (LESS's behaviour), so a long prompt can cost a row its whole answer.
Either way `truncated` is set and the report counts the tokens lost. A row whose labels are
still all masked has `n_labels == 0`: callers must flag it and never score it.

`encode_prompt_completion` is for target examples: the prompt is already rendered text, the
completion is appended to it (no EOS, exactly as LESS's validation encoding), and when the pair
is too long the prompt's *oldest* tokens are dropped so the completion survives.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

IGNORE_INDEX = -100
TEMPLATES = ("tulu", "model")
TRUNCATIONS = ("keep_answer", "right")
_HEADERS = {"system": "<|system|>\n", "user": "<|user|>\n", "assistant": "<|assistant|>\n"}


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated: bool

    @property
    def n_labels(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class EncodeReport:
    """What happened when a batch of rows was encoded."""

    n_rows: int = 0
    n_truncated: int = 0
    # rows where a token straddles the start of an answer (the tokenizer merged header and
    # answer text): that token is masked, so the answer's first characters are not trained on
    straddled: list[int] = field(default_factory=list)
    no_labels: list[int] = field(default_factory=list)  # positions with n_labels == 0
    lengths: list[int] = field(default_factory=list)  # token count before truncation
    tokens_lost: int = 0  # summed over truncated rows

    @property
    def n_no_labels(self) -> int:
        return len(self.no_labels)

    @property
    def mean_tokens_lost(self) -> float:
        """Mean tokens cut from a truncated row (0 when none was cut)."""
        return self.tokens_lost / self.n_truncated if self.n_truncated else 0.0


# --------------------------------------------------------------------------- rendering
def _eos(tokenizer) -> str:
    eos = getattr(tokenizer, "eos_token", None)
    if not eos:
        raise ValueError("the tokenizer has no eos_token; the Tulu format needs one "
                         "(set tokenizer.eos_token)")
    return eos


def render_tulu(messages: Sequence[dict], eos: str) -> tuple[str, list[tuple[int, int]]]:
    """Tulu text of a chat and the character spans [start, end) that are trained on
    (each assistant turn's content followed by `eos`)."""
    parts: list[str] = []
    spans: list[tuple[int, int]] = []
    pos = 0
    for m in messages:
        role = m["role"]
        content = m["content"]
        if role not in _HEADERS:
            raise ValueError(f"unknown role {role!r} (expected system, user or assistant)")
        header = _HEADERS[role]
        parts.append(header)
        pos += len(header)
        if role == "assistant":
            body = content + eos
            spans.append((pos, pos + len(body)))
        else:
            body = content
        parts.append(body + "\n")
        pos += len(body) + 1
    return "".join(parts), spans


def render_tulu_prompt(messages: Sequence[dict]) -> str:
    """Tulu rendering of `messages` followed by the `<|assistant|>\\n` generation header."""
    text, _ = render_tulu(messages, eos="")
    return text + _HEADERS["assistant"]


def render_model_template(messages: Sequence[dict], tokenizer) -> tuple[str, list[tuple[int, int]]]:
    """The tokenizer's own chat template; assistant spans found by rendering prefixes.

    Span of assistant turn i = [len(render(msgs[:i], generation prompt)), len(render(msgs[:i+1])))
    so it holds the content and whatever the template closes the turn with (end-of-turn token).
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("template='model' but the tokenizer has no chat_template; "
                         "use template='tulu'")
    msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
    full = tokenizer.apply_chat_template(msgs, tokenize=False)
    spans: list[tuple[int, int]] = []
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        before = tokenizer.apply_chat_template(msgs[:i], tokenize=False,
                                               add_generation_prompt=True) if i else ""
        upto = tokenizer.apply_chat_template(msgs[: i + 1], tokenize=False)
        if not (full.startswith(upto) and upto.startswith(before)):
            raise ValueError("the model's chat template does not render a conversation as a "
                             "prefix-stable sequence, so assistant labels cannot be located; "
                             "use template='tulu'")
        spans.append((len(before), len(upto)))
    return full, spans


# --------------------------------------------------------------------------- tokenising
def _label_from_offsets(ids: list[int], offsets: Sequence[tuple[int, int]],
                        spans: Sequence[tuple[int, int]],
                        special: Sequence[int] | None) -> list[int]:
    labels = [IGNORE_INDEX] * len(ids)
    if not spans:
        return labels
    j = 0
    for t, (a, b) in enumerate(offsets):
        if special is not None and special[t]:
            continue  # added by the post-processor (BOS...), not part of the text
        while j < len(spans) and a >= spans[j][1]:
            j += 1
        if j == len(spans):
            break
        s, e = spans[j]
        if s <= a < e and b > s:
            labels[t] = ids[t]
    return labels


def _is_fast(tokenizer) -> bool:
    return bool(getattr(tokenizer, "is_fast", False))


def _tokenize_with_spans(texts: list[str], spans_list: list[list[tuple[int, int]]],
                         tokenizer, add_special_tokens: bool,
                         stats: list[int] | None = None) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) for each text; labels = ids on tokens inside the spans."""
    out: list[tuple[list[int], list[int]]] = []
    if _is_fast(tokenizer):
        enc = tokenizer(texts, add_special_tokens=add_special_tokens,
                        return_offsets_mapping=True, return_special_tokens_mask=True,
                        return_attention_mask=False, verbose=False)
        for k in range(len(texts)):
            ids = list(enc["input_ids"][k])
            offsets = enc["offset_mapping"][k]
            labels = _label_from_offsets(ids, offsets, spans_list[k],
                                         enc["special_tokens_mask"][k])
            if stats is not None and any(a < s < b for s, _ in spans_list[k]
                                         for a, b in offsets):
                stats.append(k)
            out.append((ids, labels))
        return out
    # slow tokenizer: tokenise growing prefixes at span boundaries
    for text, spans in zip(texts, spans_list):
        ids = list(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])
        labels = [IGNORE_INDEX] * len(ids)
        for s, e in spans:
            a = len(tokenizer(text[:s], add_special_tokens=add_special_tokens)["input_ids"])
            b = len(tokenizer(text[:e], add_special_tokens=add_special_tokens)["input_ids"])
            for t in range(a, min(b, len(ids))):
                labels[t] = ids[t]
        out.append((ids, labels))
    return out


def _render(messages: Sequence[dict], tokenizer, template: str):
    if template == "tulu":
        return render_tulu(messages, _eos(tokenizer))
    if template == "model":
        return render_model_template(messages, tokenizer)
    raise ValueError(f"unknown template {template!r}; choose one of {TEMPLATES}")


def check_truncation(truncation: str) -> None:
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation must be one of {', '.join(TRUNCATIONS)}, got "
                         f"{truncation!r}")


def _lead_specials(tokenizer, ids: list[int], text: str, add_special_tokens: bool) -> int:
    """How many leading tokens the tokenizer itself added (e.g. BOS): they are kept when a
    sequence loses its oldest tokens."""
    if not add_special_tokens:
        return 0
    if _is_fast(tokenizer):
        mask = tokenizer(text, add_special_tokens=True, return_special_tokens_mask=True,
                         verbose=False)["special_tokens_mask"]
    else:
        specials = set(getattr(tokenizer, "all_special_ids", []) or [])
        plain = tokenizer(text, add_special_tokens=False)["input_ids"]
        n_added = max(len(ids) - len(plain), 0)
        mask = [1 if (i < n_added and x in specials) else 0 for i, x in enumerate(ids)]
    lead = 0
    while lead < len(mask) and mask[lead]:
        lead += 1
    return lead


def keep_answer(ids: list[int], labels: list[int], lead: int, max_length: int
                ) -> tuple[list[int], list[int]]:
    """Cut `ids`/`labels` to `max_length` by dropping the oldest tokens after the first `lead`
    ones, so the labelled tail survives; a labelled tail longer than the room left keeps its
    start and loses its end (then no label is lost that could have been kept)."""
    if len(ids) <= max_length:
        return ids, labels
    room = max_length - lead
    if room <= 0:
        return ids[:max_length], labels[:max_length]
    first_label = next((i for i, x in enumerate(labels) if x != IGNORE_INDEX), len(ids))
    keep_tail = len(ids) - first_label
    if keep_tail >= room:
        return (ids[:lead] + ids[first_label:first_label + room],
                [IGNORE_INDEX] * lead + labels[first_label:first_label + room])
    start = len(ids) - room
    return ids[:lead] + ids[start:], labels[:lead] + labels[start:]


def encode_chats(batch: Sequence[Sequence[dict]], tokenizer, max_length: int,
                 template: str = "tulu", truncation: str = "keep_answer"
                 ) -> tuple[list[Encoded], EncodeReport]:
    """Encode many chats at once (one batched tokenizer call) and report truncation, tokens
    lost and rows left without labels. Positions in the report index `batch`."""
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    check_truncation(truncation)
    rendered = [_render(m, tokenizer, template) for m in batch]
    report = EncodeReport(n_rows=len(batch))
    pairs = _tokenize_with_spans([r[0] for r in rendered], [r[1] for r in rendered], tokenizer,
                                 add_special_tokens=(template == "tulu"),
                                 stats=report.straddled)
    encs: list[Encoded] = []
    for k, (ids, labels) in enumerate(pairs):
        report.lengths.append(len(ids))
        truncated = len(ids) > max_length
        if truncated:
            report.n_truncated += 1
            report.tokens_lost += len(ids) - max_length
            if truncation == "right":
                ids, labels = ids[:max_length], labels[:max_length]
            else:
                lead = _lead_specials(tokenizer, ids, rendered[k][0],
                                      add_special_tokens=(template == "tulu"))
                ids, labels = keep_answer(ids, labels, lead, max_length)
        e = Encoded(ids, labels, truncated)
        if e.n_labels == 0:
            report.no_labels.append(k)
        encs.append(e)
    return encs, report


def encode_chat(messages: Sequence[dict], tokenizer, max_length: int,
                template: str = "tulu", truncation: str = "keep_answer") -> Encoded:
    """One chat -> token ids with labels on assistant content + EOS only (see module doc)."""
    encs, _ = encode_chats([messages], tokenizer, max_length, template, truncation)
    return encs[0]


def encode_prompt_completion(prompt: str, completion: str, tokenizer,
                             max_length: int) -> Encoded:
    """Tokenise prompt + completion once; labels on the completion only.

    Too long: the prompt's oldest tokens are dropped (special tokens the tokenizer adds at the
    start, e.g. BOS, are kept) so the completion survives; if the completion alone does not fit,
    it is cut on the right. `truncated` is set in both cases.
    """
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    text = prompt + completion
    (ids, labels), = _tokenize_with_spans([text], [[(len(prompt), len(text))]] if completion
                                          else [[]], tokenizer, add_special_tokens=True)
    if len(ids) <= max_length:
        return Encoded(ids, labels, False)
    lead = _lead_specials(tokenizer, ids, text, add_special_tokens=True)
    new_ids, new_labels = keep_answer(ids, labels, lead, max_length)
    return Encoded(new_ids, new_labels, True)


def collate(encs: Sequence[Encoded], pad_id: int) -> dict[str, Any]:
    """Right-padded batch: input_ids, attention_mask, labels (-100 on padding)."""
    import torch

    if not encs:
        raise ValueError("collate needs at least one encoded row")
    n = max(len(e.input_ids) for e in encs)
    ids = torch.full((len(encs), n), int(pad_id), dtype=torch.long)
    labels = torch.full((len(encs), n), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(encs), n), dtype=torch.long)
    for i, e in enumerate(encs):
        m = len(e.input_ids)
        if m:
            ids[i, :m] = torch.tensor(e.input_ids, dtype=torch.long)
            labels[i, :m] = torch.tensor(e.labels, dtype=torch.long)
            mask[i, :m] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def token_lengths(batch: Iterable[Sequence[dict]], tokenizer, template: str = "tulu",
                  chunk: int = 1024) -> list[int]:
    """Untruncated token count of each chat (for the validate report), tokenised in chunks."""
    out: list[int] = []
    buf: list[str] = []

    def flush() -> None:
        if buf:
            enc = tokenizer(buf, add_special_tokens=(template == "tulu"),
                            return_attention_mask=False, verbose=False)
            out.extend(len(x) for x in enc["input_ids"])
            buf.clear()

    for messages in batch:
        buf.append(_render(messages, tokenizer, template)[0])
        if len(buf) >= chunk:
            flush()
    flush()
    return out
