"""What each cluster is: size, source mix, lengths, c-TF-IDF keywords and medoid examples."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from clusterucb_core.features.rowsource import as_source, chunk_rows_for, normalize_rows

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


_BLOCK = 65_536  # chats decoded at a time from a Pool
_TOKEN = re.compile(r"(?u)\b[^\W\d_][^\W_]+\b")
# markup a pool's texts often carry (`<br />`, `<b>`, `&nbsp;`): no keyword should come of it
_MARKUP = re.compile(r"</?[A-Za-z][^<>]{0,200}>|&(?:[A-Za-z]{2,8}|#\d{1,6});")


def strip_markup(text: str) -> str:
    """`text` with HTML/XML tags and entities replaced by spaces (for keywords only)."""
    return _MARKUP.sub(" ", text)


def row_text(messages: Any) -> str:
    """User + assistant text of one chat (system turns left out), joined by newlines."""
    if isinstance(messages, str):
        return messages
    if messages is None:
        return ""
    parts = []
    for m in messages:
        if isinstance(m, dict) and m.get("role") in ("user", "assistant"):
            parts.append(str(m.get("content") or ""))
    return "\n".join(parts)


def table_texts(table: pd.DataFrame) -> list[str]:
    if "text" in table.columns:
        return [str(t) for t in table["text"]]
    if "messages" in table.columns:
        return [row_text(m) for m in table["messages"]]
    raise ValueError("the table needs a 'messages' or a 'text' column")


def class_tfidf_keywords(texts: Sequence[str], labels: np.ndarray, k: int, n_keywords: int = 8,
                         stop_words: str | None = "english") -> list[list[str]]:
    """Top words per class by class-based TF-IDF (BERTopic's c-TF-IDF): all of a class's texts
    form one document; tf is the word's frequency in the class divided by the class's word
    count, weighted by ``log(1 + A / f_w)`` with A the mean words per class and f_w the word's
    frequency over all classes."""
    from sklearn.feature_extraction.text import CountVectorizer

    labels = np.asarray(labels)
    keep = labels >= 0
    docs = [strip_markup(t) for t, m in zip(texts, keep) if m]
    if not docs:
        return [[] for _ in range(k)]
    vec = CountVectorizer(lowercase=True, stop_words=stop_words, token_pattern=_TOKEN.pattern)
    try:
        counts = vec.fit_transform(docs)
    except ValueError:  # empty vocabulary (only stop words / numbers)
        return [[] for _ in range(k)]
    from scipy import sparse

    lab = labels[keep]
    onehot = sparse.csr_matrix((np.ones(len(lab)), (lab, np.arange(len(lab)))),
                               shape=(k, len(lab)))
    per_class = np.asarray((onehot @ counts).todense(), dtype=np.float64)  # [k, V]
    words_per_class = per_class.sum(axis=1, keepdims=True)
    tf = per_class / np.maximum(words_per_class, 1.0)
    freq = per_class.sum(axis=0)
    avg = words_per_class.mean()
    idf = np.log(1.0 + avg / np.maximum(freq, 1.0))
    score = tf * idf[None, :]
    vocab = np.asarray(vec.get_feature_names_out())
    out = []
    for c in range(k):
        row = score[c]
        top = np.argsort(-row, kind="stable")[:n_keywords]
        out.append([str(vocab[i]) for i in top if row[i] > 0])
    return out


def make_label(keywords: Sequence[str], n: int = 3) -> str:
    return ", ".join(keywords[:n]) if keywords else "(no keywords)"


def summarize_clusters(table: pd.DataFrame, labels: np.ndarray, X: Any,
                       centroids: np.ndarray, n_keywords: int = 8, n_examples: int = 5,
                       max_docs_per_cluster: int = 2_000, token_counts: np.ndarray | None = None,
                       seed: int = 0, batch_size: int | None = None) -> pd.DataFrame:
    """One row per cluster (0..K-1; rows labelled -1 are left out and counted in
    ``df.attrs["n_unclustered"]``).

    Columns: cluster, size, share, sources (dict source -> count, largest first),
    top_source, chars_mean, chars_median, chars_p90, tokens_mean, tokens_median, tokens_p90
    (from ``token_counts`` or the table's ``n_tokens`` column; otherwise whitespace words,
    and ``df.attrs["token_unit"]`` says "words"), keywords (list), label (the top three
    keywords), examples (the ``row`` values of the members closest to the centroid, closest
    first), example_cos (their cosines).

    Keywords use at most ``max_docs_per_cluster`` random members per cluster (seeded) so a
    1M-row pool stays quick (``df.attrs["keyword_rows"]`` says how many); everything else
    uses all members. ``table`` may be a ``Pool``: its chats are then streamed, not held.
    """
    import pandas as pd

    labels = np.asarray(labels, dtype=np.int64)
    centroids = np.asarray(centroids, dtype=np.float32)
    k = int(centroids.shape[0])
    n = len(labels)
    if len(table) != n:
        raise ValueError(f"table has {len(table)} rows but labels has {n}")
    row_ids, sources, chars, words, texts_of = _row_stats(table, n)
    token_unit = "tokens"
    if token_counts is None and "n_tokens" in getattr(table, "columns", ()):
        token_counts = table["n_tokens"].to_numpy()
    if token_counts is None:
        token_counts = words
        token_unit = "words"
    token_counts = np.asarray(token_counts, dtype=np.float64)

    # cosine of every row to its own centroid (streamed), for the examples
    src = as_source(X)
    if src.n_rows != n:
        raise ValueError(f"features have {src.n_rows} rows but labels has {n}")
    own = np.full(n, -np.inf, dtype=np.float32)
    for start, raw in src.chunks(batch_size or chunk_rows_for(src.dim)):
        xs, ok = normalize_rows(raw)
        lab = labels[start:start + len(raw)]
        m = ok & (lab >= 0)
        cos = np.einsum("ij,ij->i", xs[m], centroids[lab[m]])
        part = own[start:start + len(raw)]
        part[m] = cos

    # keywords on a per-cluster sample
    rng = np.random.default_rng(seed)
    kw_rows = []
    for c in range(k):
        members = np.flatnonzero(labels == c)
        if len(members) > max_docs_per_cluster:
            members = np.sort(rng.choice(members, size=max_docs_per_cluster, replace=False))
        kw_rows.append(members)
    kw_idx = np.concatenate(kw_rows) if kw_rows else np.array([], dtype=np.int64)
    keywords = class_tfidf_keywords(texts_of(kw_idx), labels[kw_idx], k, n_keywords)

    n_clustered = int((labels >= 0).sum())
    records = []
    for c in range(k):
        members = np.flatnonzero(labels == c)
        size = len(members)
        src_counts = pd.Series(sources[members]).value_counts()
        order = members[np.argsort(-own[members], kind="stable")[:n_examples]]
        ch = chars[members] if size else np.zeros(1)
        tk = token_counts[members] if size else np.zeros(1)
        records.append({
            "cluster": c,
            "size": size,
            "share": size / max(n_clustered, 1),
            "sources": {str(s): int(v) for s, v in src_counts.items()},
            "top_source": str(src_counts.index[0]) if size else "",
            "chars_mean": float(np.mean(ch)),
            "chars_median": float(np.median(ch)),
            "chars_p90": float(np.percentile(ch, 90)),
            "tokens_mean": float(np.mean(tk)),
            "tokens_median": float(np.median(tk)),
            "tokens_p90": float(np.percentile(tk, 90)),
            "keywords": keywords[c],
            "label": make_label(keywords[c]),
            "examples": [int(row_ids[i]) for i in order],
            "example_cos": [float(own[i]) for i in order],
        })
    df = pd.DataFrame(records)
    df.attrs["n_unclustered"] = int(n - n_clustered)
    df.attrs["token_unit"] = token_unit
    df.attrs["keyword_rows"] = int(len(kw_idx))
    df.attrs["keyword_rows_per_cluster"] = int(max_docs_per_cluster)
    return df


def _row_stats(table: Any, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                             Any]:
    """(row ids, sources, chars and words per row, texts_of(rows)) of a table or a ``Pool``.

    A Pool's chats are decoded a block at a time and only counted: its texts are kept only
    for the rows ``texts_of`` is asked for (the keyword sample), so a 1M-row pool is never
    held as text."""
    if not callable(getattr(table, "messages", None)):  # a DataFrame (a column, not a method)
        texts = table_texts(table)
        chars = np.fromiter((len(t) for t in texts), dtype=np.int64, count=n)
        words = np.fromiter((len(t.split()) for t in texts), dtype=np.int64, count=n)
        row_ids = table["row"].to_numpy() if "row" in table.columns else np.arange(n)
        sources = (table["source"].astype(str).to_numpy() if "source" in table.columns
                   else np.full(n, "", dtype=object))
        return row_ids, sources, chars, words, lambda rows: [texts[i] for i in rows]
    pool = table
    chars = np.zeros(n, dtype=np.int64)
    words = np.zeros(n, dtype=np.int64)
    for lo in range(0, n, _BLOCK):
        for j, m in enumerate(pool.messages(np.arange(lo, min(lo + _BLOCK, n)))):
            t = row_text(m)
            chars[lo + j], words[lo + j] = len(t), len(t.split())
    return (np.arange(n), pool.column("source").astype(str), chars, words,
            lambda rows: [row_text(m) for m in pool.messages(np.asarray(rows))])
