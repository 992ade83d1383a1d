"""A compact Qwen3 tokenizer: the subset of Qwen3 tokens that a corpus needs.

Tiny models in the embedded world cannot afford a 151,936-row output layer on CPU,
so they use a renumbered subset of the Qwen3 vocabulary that *segments their
corpus exactly as Qwen3 does*. The subset is

* every token the full tokenizer produces on ``texts``;
* every merge ancestor of those tokens (the two parts of its merge, recursively);
* all 256 single-byte tokens (so any text stays encodable);
* all 26 Qwen3 added tokens.

Ids are dense: the byte and ordinary tokens sorted by original Qwen3 id, then the
added tokens in Qwen3 order. The merge list is the full merge list restricted to
merges whose *result* is kept, in original rank order. ``id_map.parquet`` maps
``compact_id -> qwen3_id`` (plus the decoded token string).

Why segmentation is identical on every text of ``texts``
--------------------------------------------------------
Added tokens are split out first by the tokenizer itself (same contents, same
flags), and normalization / pre-tokenization are the same, so both tokenizers run
BPE on the same pre-tokenized words. BPE on a word starts from its bytes and
repeatedly applies the highest-priority merge whose pair is present. Consider the
full run on a word of ``texts``: every merge it applies produces a token that is
either a final token (kept) or is later consumed by another merge, hence is a
merge ancestor of a final token (kept). By induction over the steps, the compact
run applies the same merge at each step: its merge list keeps every merge applied
by the full run, in the same relative order, and any merge it *lacks* has a result
outside the subset, so the full run never applied it on this word either; the
present pairs are identical at every step, so the highest-priority applicable
merge is the same. Both runs end with the same token strings, and compact ids map
through ``id_map`` to the full ids. (The full Qwen3 model uses
``ignore_merges=False``, so no vocabulary short-cut bypasses the merges.) The
build re-encodes ``texts`` with both tokenizers and checks this.

Text *outside* ``texts`` still encodes (all bytes are kept) but may segment into
smaller pieces than Qwen3 would.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from rocktokens.core.io import read_json, write_json

from .qwen3 import atomic_directory

log = logging.getLogger(__name__)

ID_MAP_FILE = "id_map.parquet"
_BATCH = 2048


def _merge_pairs(model: dict) -> list[tuple[str, str]]:
    pairs = []
    for m in model["merges"]:
        if isinstance(m, str):
            a, b = m.split(" ")
        else:
            a, b = m
        pairs.append((a, b))
    return pairs


def _batches(texts: Sequence[str], size: int = _BATCH):
    for i in range(0, len(texts), size):
        yield texts[i : i + size]


def _encode_all(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    out: list[list[int]] = []
    for batch in _batches(texts):
        out.extend(e.ids for e in tokenizer.encode_batch_fast(list(batch), add_special_tokens=False))
    return out


def _used_ids(tokenizer, texts: Sequence[str]) -> set[int]:
    used: set[int] = set()
    for batch in _batches(texts):
        for e in tokenizer.encode_batch_fast(list(batch), add_special_tokens=False):
            used.update(e.ids)
    return used


def build_compact_tokenizer(
    full_dir: str | os.PathLike,
    texts: Iterable[str],
    out_dir: str | os.PathLike,
    *,
    verify: bool = True,
) -> None:
    """Build the compact tokenizer of ``texts`` from the full Qwen3 tokenizer in ``full_dir``.

    Writes ``out_dir`` (atomically) with ``tokenizer.json``, ``tokenizer_config.json``
    (same chat template / eos / pad as the full one, added-token ids renumbered) and
    ``id_map.parquet`` (columns ``compact_id`` int32, ``qwen3_id`` int32, ``token``
    str). With ``verify`` (default) every text is re-encoded by both tokenizers and
    the build fails unless the mapped compact ids equal the full ids.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tokenizers import Tokenizer

    t0 = time.perf_counter()
    full_dir = Path(full_dir)
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")

    full_json = read_json(full_dir / "tokenizer.json")
    model = full_json["model"]
    if model.get("type") != "BPE":
        raise ValueError(f"{full_dir}: expected a BPE tokenizer, got {model.get('type')}")
    if model.get("ignore_merges"):
        raise ValueError(f"{full_dir}: ignore_merges=True is not supported (Qwen3 uses False)")
    full = Tokenizer.from_str(json.dumps(full_json, ensure_ascii=False))
    vocab: dict[str, int] = model["vocab"]
    id_to_tok = {i: t for t, i in vocab.items()}
    pairs = _merge_pairs(model)
    parent = {a + b: (a, b) for a, b in pairs}
    added = sorted(full_json["added_tokens"], key=lambda d: d["id"])
    added_ids = {d["id"] for d in added}
    if min(added_ids, default=len(vocab)) < len(vocab):
        raise ValueError("added tokens overlap the BPE vocabulary")

    # 1. tokens the corpus uses, 2. their merge ancestors, 3. all single bytes.
    used = _used_ids(full, texts)
    keep: set[str] = set()
    stack = [id_to_tok[i] for i in used if i not in added_ids]
    while stack:
        tok = stack.pop()
        if tok in keep:
            continue
        keep.add(tok)
        if tok in parent:
            stack.extend(parent[tok])
        elif len(tok) != 1:
            raise ValueError(f"token {tok!r} has no merge and is not a single byte")
    keep.update(t for t in vocab if len(t) == 1)
    kept = sorted(keep, key=vocab.__getitem__)
    new_vocab = {t: i for i, t in enumerate(kept)}
    new_merges = [[a, b] for a, b in pairs if a + b in new_vocab]
    for a, b in new_merges:
        if a not in new_vocab or b not in new_vocab:  # cannot happen: ancestors are kept
            raise AssertionError(f"merge parts of {a + b!r} missing")

    n_bpe = len(kept)
    new_json = dict(full_json)
    new_json["model"] = dict(model, vocab=new_vocab, merges=new_merges)
    new_json["added_tokens"] = [dict(d, id=n_bpe + k) for k, d in enumerate(added)]
    compact = Tokenizer.from_str(json.dumps(new_json, ensure_ascii=False))
    qwen3_ids = np.array([vocab[t] for t in kept] + [d["id"] for d in added], dtype=np.int64)
    if compact.get_vocab_size(with_added_tokens=True) != len(qwen3_ids):
        raise AssertionError("compact tokenizer size mismatch")
    t1 = time.perf_counter()

    if verify:
        for k, (a, b) in enumerate(zip(_encode_all(full, texts), _encode_all(compact, texts))):
            if len(a) != len(b) or not np.array_equal(qwen3_ids[np.asarray(b, dtype=np.int64)], a):
                raise AssertionError(f"compact tokenizer segments texts[{k}] differently: {texts[k][:80]!r}")

    config_path = full_dir / "tokenizer_config.json"
    config = read_json(config_path) if config_path.exists() else {}
    if "added_tokens_decoder" in config:
        by_content = {d["content"]: n_bpe + k for k, d in enumerate(added)}
        config["added_tokens_decoder"] = {
            str(by_content[v["content"]]): v
            for v in sorted(config["added_tokens_decoder"].values(), key=lambda v: by_content[v["content"]])
        }

    tokens = [compact.decode([i], skip_special_tokens=False) for i in range(len(qwen3_ids))]
    table = pa.table(
        {
            "compact_id": pa.array(np.arange(len(qwen3_ids), dtype=np.int32)),
            "qwen3_id": pa.array(qwen3_ids.astype(np.int32)),
            "token": pa.array(tokens, type=pa.string()),
        }
    )
    with atomic_directory(out_dir) as tmp:
        compact.save(str(tmp / "tokenizer.json"))
        write_json(config, tmp / "tokenizer_config.json", sort_keys=False)
        pq.write_table(table, tmp / ID_MAP_FILE)
    log.info(
        "compact tokenizer %s: %d texts, %d used tokens -> %d BPE + %d added tokens, %d merges "
        "(subset %.1fs, total %.1fs, verified=%s)",
        out_dir,
        len(texts),
        len(used),
        n_bpe,
        len(added),
        len(new_merges),
        t1 - t0,
        time.perf_counter() - t0,
        verify,
    )


def id_map_of(dir: str | os.PathLike) -> np.ndarray | None:
    """:func:`load_id_map` of a compact tokenizer directory; ``None`` for a tokenizer without one (a hub model's
    own tokenizer, whose ids are already Qwen3 ids)."""
    return load_id_map(dir) if (Path(dir) / ID_MAP_FILE).exists() else None


def load_id_map(dir: str | os.PathLike) -> np.ndarray:
    """``compact_id -> qwen3_id`` as an int64 array (index = compact id).

    Reads ``dir/id_map.parquet`` and checks that compact ids are dense ``0..N-1``.
    Use it to gather teacher (full Qwen3) logits: ``teacher_logits[..., id_map]``.
    """
    import pyarrow.parquet as pq

    table = pq.read_table(Path(dir) / ID_MAP_FILE, columns=["compact_id", "qwen3_id"])
    cid = table.column("compact_id").to_numpy()
    qid = table.column("qwen3_id").to_numpy()
    order = np.argsort(cid, kind="stable")
    cid, qid = cid[order], qid[order]
    if not np.array_equal(cid, np.arange(len(cid))):
        raise ValueError(f"{dir}/{ID_MAP_FILE}: compact ids are not dense 0..{len(cid) - 1}")
    return qid.astype(np.int64)


def chat_wrapped(full_dir, texts: Iterable[str]) -> list[str]:
    """``texts`` plus each text rendered by the chat template as a user turn and an assistant turn.

    The models only ever see chat-formatted sequences; including the renderings makes the compact vocabulary
    cover the template's own scaffolding ("user", "assistant", newlines around special tokens) and makes the
    build's exactness check run on the sequences as the models see them.
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(full_dir), local_files_only=True)
    texts = list(dict.fromkeys(texts))  # unique, in first-seen order
    out = list(texts)
    for t in texts:
        out.append(tok.apply_chat_template([{"role": "user", "content": t}, {"role": "assistant", "content": t}],
                                           tokenize=False, add_generation_prompt=True))
    return out
