"""Tulu rendering, assistant-only labels, truncation, collation."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clusterucb_core.data.formatting import (
    IGNORE_INDEX,
    Encoded,
    collate,
    encode_chat,
    encode_chats,
    encode_prompt_completion,
    render_tulu,
    render_tulu_prompt,
    token_lengths,
)

REPO = Path(__file__).resolve().parents[2]
DEMO_MODEL = REPO / "sample_data" / "demo_model"

_CORPUS = [
    f"<|user|>\nWhat is {i} plus {i + 1}? Explain the steps.\n<|assistant|>\n"
    f"The answer is {2 * i + 1}. First add the units.</s>\n<|system|>\nBe brief.\n"
    for i in range(200)
] + ["Héllo wörld, ünïcode ✓ 日本語 текст", "multi\n\nline  text\twith tabs"]


def make_tokenizer(chat_template: str | None = None):
    """A tiny byte-level BPE tokenizer with BOS added and '</s>' as EOS (offline, ~10 ms)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=["<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")
    if chat_template:
        fast.chat_template = chat_template
    return fast


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2 plus 3?"},
    {"role": "assistant", "content": "The answer is 5."},
    {"role": "user", "content": "And 4 plus 4?"},
    {"role": "assistant", "content": "It is 8."},
]


def test_render_tulu_exact_text_and_spans():
    text, spans = render_tulu(CHAT, "</s>")
    assert text == ("<|system|>\nBe brief.\n<|user|>\nWhat is 2 plus 3?\n<|assistant|>\n"
                    "The answer is 5.</s>\n<|user|>\nAnd 4 plus 4?\n<|assistant|>\nIt is 8.</s>\n")
    assert [text[a:b] for a, b in spans] == ["The answer is 5.</s>", "It is 8.</s>"]
    assert render_tulu_prompt(CHAT[:2]) == \
        "<|system|>\nBe brief.\n<|user|>\nWhat is 2 plus 3?\n<|assistant|>\n"
    with pytest.raises(ValueError, match="unknown role"):
        render_tulu([{"role": "tool", "content": "x"}], "</s>")


def _labelled_runs(enc: Encoded) -> list[list[int]]:
    runs, cur = [], []
    for i, lab in zip(enc.input_ids, enc.labels):
        if lab == IGNORE_INDEX:
            if cur:
                runs.append(cur)
                cur = []
        else:
            assert lab == i
            cur.append(i)
    if cur:
        runs.append(cur)
    return runs


def test_labels_are_exactly_the_assistant_turns(tok):
    enc = encode_chat(CHAT, tok, max_length=512)
    assert not enc.truncated
    assert enc.input_ids[0] == tok.bos_token_id and enc.labels[0] == IGNORE_INDEX
    runs = _labelled_runs(enc)
    assert [tok.decode(r) for r in runs] == ["The answer is 5.</s>", "It is 8.</s>"]
    assert enc.n_labels == sum(len(r) for r in runs)
    # the full sequence decodes to the rendered text (tokenised once, nothing lost)
    assert tok.decode(enc.input_ids[1:]) == render_tulu(CHAT, "</s>")[0]
    # the <|assistant|>\n header and the newline after EOS are masked
    text = render_tulu(CHAT, "</s>")[0]
    offsets = tok(text, return_offsets_mapping=True)["offset_mapping"]
    _, spans = render_tulu(CHAT, "</s>")
    for (a, b), lab in zip(offsets, enc.labels):
        inside = any(s <= a and b <= e for s, e in spans) and b > a
        assert (lab != IGNORE_INDEX) == inside, (a, b, text[a:b])


_word = st.text(alphabet="abcxyz019 .,?!\n\t\u00e9\u65e5", min_size=1, max_size=30)
_clean = _word.map(str.strip).filter(bool)
_turn_roles = st.lists(st.sampled_from(["system", "user", "assistant"]), min_size=1, max_size=6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(roles=_turn_roles, contents=st.lists(_clean, min_size=6, max_size=6))
def test_label_mask_property(tok, roles, contents):
    msgs = [{"role": r, "content": c} for r, c in zip(roles, contents)]
    enc = encode_chat(msgs, tok, max_length=10_000)
    text, spans = render_tulu(msgs, "</s>")
    offsets = tok(text, return_offsets_mapping=True)["offset_mapping"]
    assert len(offsets) == len(enc.input_ids)
    for (a, b), lab in zip(offsets, enc.labels):
        inside = b > a and any(s <= a and b <= e for s, e in spans)
        assert (lab != IGNORE_INDEX) == inside
    # contents without leading/trailing whitespace: labels decode to exactly content + eos
    expected = [m["content"] + "</s>" for m in msgs if m["role"] == "assistant"]
    decoded = "".join(tok.decode(r) for r in _labelled_runs(enc))
    assert decoded == "".join(expected)


def test_right_truncation_and_no_label_rows(tok):
    full = encode_chat(CHAT, tok, max_length=10_000)
    cut = encode_chat(CHAT, tok, max_length=20, truncation="right")
    assert cut.truncated and len(cut.input_ids) == 20
    assert cut.input_ids == full.input_ids[:20] and cut.labels == full.labels[:20]
    long_user = [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "ok"}]
    enc = encode_chat(long_user, tok, max_length=32, truncation="right")
    assert enc.truncated and enc.n_labels == 0
    encs, report = encode_chats([CHAT, long_user, CHAT], tok, max_length=32, truncation="right")
    assert report.n_rows == 3 and report.n_truncated == 3
    assert report.no_labels == [1] and report.n_no_labels == 1
    assert report.lengths[0] == len(full.input_ids)
    assert report.straddled == []  # byte-level pre-tokenizer: newlines always split
    assert token_lengths([CHAT, long_user], tok) == report.lengths[:2]
    # a chat without an assistant turn has nothing to train on
    assert encode_chat([{"role": "user", "content": "hi"}], tok, 64).n_labels == 0
    with pytest.raises(ValueError):
        encode_chat(CHAT, tok, max_length=0)
    with pytest.raises(ValueError, match="truncation must be one of"):
        encode_chat(CHAT, tok, max_length=32, truncation="left")


def test_keep_answer_truncation_drops_oldest_prompt_tokens(tok):
    long_user = [{"role": "user", "content": "word " * 200},
                 {"role": "assistant", "content": "the answer is ok"}]
    full = encode_chat(long_user, tok, max_length=100_000)
    enc = encode_chat(long_user, tok, max_length=32)  # keep_answer is the default
    assert enc.truncated and len(enc.input_ids) == 32
    assert enc.input_ids[0] == tok.bos_token_id  # BOS kept
    assert enc.n_labels == full.n_labels > 0  # the whole answer survives
    assert enc.input_ids[1:] == full.input_ids[-31:] and enc.labels[1:] == full.labels[-31:]
    encs, report = encode_chats([long_user, CHAT], tok, max_length=32)
    assert report.n_truncated == 2 and report.n_no_labels == 0
    assert report.tokens_lost == sum(n - 32 for n in report.lengths)
    assert report.mean_tokens_lost == report.tokens_lost / 2
    # an answer longer than the room keeps its start
    long_answer = [{"role": "user", "content": "hi"},
                   {"role": "assistant", "content": "step " * 100}]
    full = encode_chat(long_answer, tok, max_length=100_000)
    enc = encode_chat(long_answer, tok, max_length=16)
    first = next(i for i, x in enumerate(full.labels) if x != IGNORE_INDEX)
    assert enc.input_ids[1:] == full.input_ids[first:first + 15] and enc.n_labels == 15


def test_prompt_completion_labels_and_left_truncation(tok):
    prompt = ("<|user|>\nThe following are multiple choice questions.\n\nQ?\nAnswer:\n"
              "<|assistant|>\nThe answer is:")
    enc = encode_prompt_completion(prompt, " B", tok, max_length=1000)
    assert not enc.truncated
    assert (
        tok.decode([i for i, lab in zip(enc.input_ids, enc.labels) if lab != IGNORE_INDEX]) == " B"
    )
    assert tok.decode(enc.input_ids, skip_special_tokens=False) == "<s>" + prompt + " B"

    long_prompt = "<|user|>\n" + "context words here " * 100 + "\n<|assistant|>\nA:"
    completion = " the answer is 42"
    full = encode_prompt_completion(long_prompt, completion, tok, max_length=100_000)
    enc = encode_prompt_completion(long_prompt, completion, tok, max_length=40)
    assert enc.truncated and len(enc.input_ids) == 40
    assert enc.input_ids[0] == tok.bos_token_id  # BOS kept
    # the completion survives whole, with the same labels as untruncated
    assert enc.n_labels == full.n_labels
    assert enc.input_ids[-full.n_labels:] == full.input_ids[-full.n_labels:]
    assert enc.labels[-full.n_labels:] == full.labels[-full.n_labels:]
    # the newest prompt tokens are the ones kept
    assert enc.input_ids[1:] == full.input_ids[-39:]
    # completion longer than max_length: cut on the right, still has labels
    enc = encode_prompt_completion("Q:", " a b c d e f g h i j k l m n o p", tok, max_length=6)
    assert enc.truncated and len(enc.input_ids) == 6 and enc.n_labels == 5
    assert encode_prompt_completion("Q:", "", tok, 16).n_labels == 0


def test_collate_right_padding():
    a = Encoded([5, 6, 7], [-100, 6, 7], False)
    b = Encoded([8], [8], False)
    batch = collate([a, b], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert str(batch["input_ids"].dtype) == "torch.int64"
    with pytest.raises(ValueError):
        collate([], 0)


TEMPLATE = ("{% for m in messages %}{{ '[' + m['role'] + ']' + m['content'] }}"
            "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}"
            "{% if add_generation_prompt %}[assistant]{% endif %}")


def test_model_template_labels():
    tok = make_tokenizer(TEMPLATE)
    enc = encode_chat(CHAT, tok, max_length=512, template="model")
    runs = [tok.decode(r) for r in _labelled_runs(enc)]
    # span = content + what the template closes the turn with (eos + newline here)
    assert runs == ["The answer is 5.</s>\n", "It is 8.</s>\n"]
    with pytest.raises(ValueError, match="chat_template"):
        encode_chat(CHAT, make_tokenizer(), 64, template="model")
    with pytest.raises(ValueError, match="unknown template"):
        encode_chat(CHAT, tok, 64, template="chatml")


def test_no_eos_is_a_clear_error(tok):
    class NoEos:
        eos_token = None

    with pytest.raises(ValueError, match="eos_token"):
        encode_chat(CHAT, NoEos(), 64)


def _check_label_spans(tok) -> None:
    """Labels = tokens starting inside an assistant span; every non-space answer character and
    each EOS are trained on; nothing else is."""
    enc = encode_chat(CHAT, tok, max_length=512)
    text, spans = render_tulu(CHAT, tok.eos_token)
    offsets = tok(text, return_offsets_mapping=True)["offset_mapping"]
    assert len(offsets) == len(enc.input_ids)
    covered: set[int] = set()
    for (a, b), lab in zip(offsets, enc.labels):
        inside = any(s <= a < e and b > s for s, e in spans)
        assert (lab != IGNORE_INDEX) == inside, (a, b, text[a:b])
        if inside:
            covered.update(range(a, b))
    for s, e in spans:
        assert {i for i in range(s, e) if not text[i].isspace()} <= covered
    eos_positions = [i for i, x in enumerate(enc.input_ids) if x == tok.eos_token_id]
    assert len(eos_positions) == 2
    assert all(enc.labels[i] == tok.eos_token_id for i in eos_positions)


def test_label_spans_fixture_tokenizer(tok):
    _check_label_spans(tok)


@pytest.mark.skipif(not (DEMO_MODEL / "tokenizer_config.json").exists()
                    and not (DEMO_MODEL / "tokenizer.json").exists(),
                    reason="sample_data/demo_model not built yet")
def test_demo_tokenizer_labels():
    from transformers import AutoTokenizer

    _check_label_spans(AutoTokenizer.from_pretrained(DEMO_MODEL))


def test_straddling_token_is_masked_and_reported():
    """A tokenizer that merges across the header newline (no newline split): the merged token
    belongs to the header, is masked, and the row is reported."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"<s>": 0, "</s>": 1, "<unk>": 2, "<|user|>\nHi\n": 3,
                                      "<|assistant|>\nHello": 4, " there": 5, "\n": 6},
                                     unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(
        pattern=Regex(r"<\|user\|>\nHi\n|<\|assistant\|>\nHello| there|\n"),
        behavior="isolated")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>")
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there"}]
    encs, report = encode_chats([msgs], fast, 64)
    assert fast.convert_ids_to_tokens(encs[0].input_ids) == [
        "<|user|>\nHi\n", "<|assistant|>\nHello", " there", "</s>", "\n"]
    assert encs[0].labels == [IGNORE_INDEX, IGNORE_INDEX, 5, 1, IGNORE_INDEX]
    assert report.straddled == [0]
