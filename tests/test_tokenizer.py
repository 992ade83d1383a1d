"""Tests for rocktokens.tokenizer: the offline Qwen3 tokenizer and the compact subset."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer

from rocktokens.tokenizer import (
    QWEN3_ADDED_TOKENS,
    QWEN3_MODEL_VOCAB,
    QWEN3_TOKENIZER_LEN,
    build_compact_tokenizer,
    load_id_map,
    load_qwen_ranks,
    qwen3_tiktoken_encoding,
)
from rocktokens.tokenizer.qwen3 import atomic_directory

REPO = Path(__file__).resolve().parents[1]

SAMPLE_TEXTS = [
    "Hello, world!",
    "Let $x = \\frac{1}{2}$ and $y=\\sqrt{x^2+1}$; then $\\int_0^1 f(x)\\,dx \\approx 0.785$.",
    "**Step 1:**\n\nCompute 12 * 34 = 408.\n\n**Step 2:** Add 1,234,567.89 to it.\n",
    "\\begin{align} a &= b \\\\ c &\\le d \\end{align}\n\\boxed{42}",
    "Numbers: 0 7 42 3.14159 -2e10 1/3 100000000000000000 ½ ① ٣",
    "Unicode: café naïve Ærøskøbing 日本語のテキスト 中文 한국어 Ελληνικά русский 🙂👍🏽 \u200b",
    "Whitespace   runs\t\tand\ttabs    \n\n\n    indented\r\n  \r\n trailing   ",
    "   leading spaces and a lone \n",
    "I'm sure you'll see he'd've DON'T WON'T It'S they'RE we'LL",
    "def f(x):\n    return x ** 2  # comment\n\n\nprint(f(3))\n",
    "```python\nfor i in range(10):\n\tprint(i)\n```",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\nEasy.\n</think>\n\n4<|im_end|>\n",
    "<|endoftext|><|endoftext|>text after eot",
    "",
    " ",
    "\n",
    "a",
    "!!!???...,,,;;;",
]


def _fuzz_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    pieces = [
        " ", "  ", "\t", "\n", "\n\n", "\r\n", "'s", "'LL", "'d", "a", "The", " the", "ing", "0", "9",
        "123", "$", "\\frac", "{", "}", "^", "_", "**", "#", ".", ",", "!", "?", "-", "é", "e\u0301",
        "日本", "ü", "🙂", "\u00a0", "\u3000", "Ω", "ß", "ﬁ", "<", ">", "|", "<|im_end|>", "<think>",
    ]
    return ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 40))) for _ in range(n)]


# qwen3_dir: the session's Qwen3 tokenizer, built once by build_qwen3_tokenizer (tests/conftest.py); its build
# time is a benchmark (benchmarks/bench_tokenizer.py), not a test.


@pytest.fixture(scope="session")
def qwen3_tk(qwen3_dir) -> Tokenizer:
    return Tokenizer.from_file(str(qwen3_dir / "tokenizer.json"))


@pytest.fixture(scope="session")
def qwen3_hf(qwen3_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(qwen3_dir)


@pytest.fixture(scope="session")
def tiktoken_enc():
    return qwen3_tiktoken_encoding()


# ----------------------------------------------------------------------------- full


def test_ranks_file():
    ranks = load_qwen_ranks()
    assert len(ranks) == 151643
    assert ranks[b"Hello"] == 9707
    assert sorted(r for t, r in ranks.items() if len(t) == 1) == list(range(256))


def test_files_and_pins(qwen3_dir, qwen3_tk, qwen3_hf):
    assert sorted(os.listdir(qwen3_dir)) == ["tokenizer.json", "tokenizer_config.json"]
    # no temp dirs left next to the output
    assert sorted(os.listdir(qwen3_dir.parent)) == ["qwen3"]
    for tok in (qwen3_tk, qwen3_hf):
        enc = tok.encode("Hello, world!")
        ids = enc.ids if hasattr(enc, "ids") else enc
        assert ids == [9707, 11, 1879, 0]
    pins = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<think>": 151667, "</think>": 151668}
    for text, tid in pins.items():
        assert qwen3_tk.token_to_id(text) == tid
        assert qwen3_hf.convert_tokens_to_ids(text) == tid
        assert qwen3_hf.encode(text) == [tid]
    assert len(qwen3_hf) == QWEN3_TOKENIZER_LEN == 151669
    assert qwen3_tk.get_vocab_size(with_added_tokens=True) == 151669
    assert QWEN3_MODEL_VOCAB == 151936 > len(qwen3_hf)
    assert qwen3_hf.eos_token == "<|im_end|>" and qwen3_hf.eos_token_id == 151645
    assert qwen3_hf.pad_token == "<|endoftext|>" and qwen3_hf.pad_token_id == 151643
    assert qwen3_hf.bos_token is None and qwen3_hf.unk_token is None
    assert qwen3_hf.model_max_length == 262144


def test_added_tokens_order_and_flags(qwen3_dir, qwen3_hf):
    data = json.loads((qwen3_dir / "tokenizer.json").read_text())
    added = [(d["id"], d["content"], d["special"], d["normalized"]) for d in data["added_tokens"]]
    assert [a[0] for a in added] == list(range(151643, 151669))
    assert [(a[1], a[2]) for a in added] == list(QWEN3_ADDED_TOKENS)
    assert [a[1] for a in added if not a[2]] == ["<tool_response>", "</tool_response>", "<think>", "</think>"]
    assert not any(a[3] for a in added)
    dec = qwen3_hf.added_tokens_decoder
    assert dec[151644].content == "<|im_start|>" and dec[151644].special
    assert dec[151667].content == "<think>" and not dec[151667].special
    # special tokens are dropped by skip_special_tokens, <think> is kept
    ids = qwen3_hf.encode("<|im_start|>a<think>b</think><|im_end|>")
    assert qwen3_hf.decode(ids, skip_special_tokens=True) == "a<think>b</think>"


def test_pipeline_and_merges(qwen3_dir):
    data = json.loads((qwen3_dir / "tokenizer.json").read_text())
    assert data["normalizer"] == {"type": "NFC"}
    split, byte_level = data["pre_tokenizer"]["pretokenizers"]
    assert split["type"] == "Split" and split["behavior"] == "Isolated" and not split["invert"]
    assert split["pattern"]["Regex"].startswith("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+")
    assert byte_level == {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    assert data["decoder"]["type"] == "ByteLevel"
    model = data["model"]
    assert model["type"] == "BPE" and model["ignore_merges"] is False
    merges = model["merges"]
    assert len(merges) == 151643 - 256
    vocab = model["vocab"]
    # ordered by the rank of the merged token; first merge is "  " (rank 256)
    assert merges[0] == ["Ġ", "Ġ"] and vocab["ĠĠ"] == 256
    result_ranks = [vocab[a + b] for a, b in merges]
    assert result_ranks == list(range(256, 151643))
    assert all(vocab[a] < r and vocab[b] < r for (a, b), r in zip(merges, result_ranks))


def test_matches_tiktoken(qwen3_tk, qwen3_hf, tiktoken_enc):
    texts = SAMPLE_TEXTS + _fuzz_texts(400)
    full = [e.ids for e in qwen3_tk.encode_batch(texts, add_special_tokens=False)]
    n_tokens = 0
    for text, ids in zip(texts, full):
        ref = tiktoken_enc.encode(unicodedata.normalize("NFC", text), allowed_special="all")
        assert ids == ref, text
        n_tokens += len(ids)
    assert n_tokens > 5000
    for text in SAMPLE_TEXTS:
        assert qwen3_hf.encode(text) == tiktoken_enc.encode(text, allowed_special="all"), text
    # a spot check against known Qwen ids
    assert qwen3_hf.encode(" the") == [279]
    assert qwen3_hf.encode("\n\n") == [271]


def test_decode_roundtrip(qwen3_tk, qwen3_hf):
    for text in SAMPLE_TEXTS + _fuzz_texts(100, seed=1):
        nfc = unicodedata.normalize("NFC", text)
        assert qwen3_tk.decode(qwen3_tk.encode(text).ids, skip_special_tokens=False) == nfc
        assert qwen3_hf.decode(qwen3_hf.encode(text)) == nfc


def test_chat_template(qwen3_hf):
    one = [{"role": "user", "content": "What is 2+2?"}]
    assert qwen3_hf.apply_chat_template(one, tokenize=False) == "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
    prompt = qwen3_hf.apply_chat_template(one, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    assert prompt == "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    ids = qwen3_hf.apply_chat_template(one, add_generation_prompt=True, return_dict=False)
    assert ids == qwen3_hf.encode(prompt)
    assert ids[:2] == [151644, 872] and ids[-3:] == [151644, 77091, 198]  # user / assistant\n
    conv = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"},
    ]
    assert qwen3_hf.apply_chat_template(conv, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"
    )


def test_atomic_write(tmp_path):
    out = tmp_path / "d"
    with pytest.raises(RuntimeError):
        with atomic_directory(out) as tmp:
            (tmp / "half.json").write_text("{")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []
    with atomic_directory(out) as tmp:
        (tmp / "a").write_text("1")
    with atomic_directory(out) as tmp:  # replaces an existing directory
        (tmp / "b").write_text("2")
    assert os.listdir(out) == ["b"] and os.listdir(tmp_path) == ["d"]


# ----------------------------------------------------------------------------- compact


def _corpus(qwen3_hf) -> list[str]:
    texts = list(SAMPLE_TEXTS) + _fuzz_texts(200, seed=2)
    for i, t in enumerate(SAMPLE_TEXTS[:8]):
        conv = [{"role": "user", "content": t}, {"role": "assistant", "content": f"The answer is {i}."}]
        texts.append(qwen3_hf.apply_chat_template(conv, tokenize=False))
    return texts


@pytest.fixture(scope="session")
def compact(qwen3_dir, qwen3_hf, tmp_path_factory):
    texts = _corpus(qwen3_hf)
    out = tmp_path_factory.mktemp("compact") / "c"
    build_compact_tokenizer(qwen3_dir, iter(texts), out)  # any iterable, consumed once
    return out, texts


def test_compact_segments_like_qwen3(compact, qwen3_tk, qwen3_hf):
    from transformers import AutoTokenizer

    out, texts = compact
    id_map = load_id_map(out)
    ctk = Tokenizer.from_file(str(out / "tokenizer.json"))
    chf = AutoTokenizer.from_pretrained(out)
    assert len(chf) == len(id_map) == ctk.get_vocab_size(with_added_tokens=True)
    for text in texts:
        full = qwen3_tk.encode(text)
        comp = ctk.encode(text)
        assert comp.tokens == full.tokens, text
        assert id_map[comp.ids].tolist() == full.ids, text
        assert id_map[chf.encode(text)].tolist() == qwen3_hf.encode(text), text
        assert chf.decode(chf.encode(text)) == unicodedata.normalize("NFC", text)


def test_compact_vocab_layout(compact, qwen3_dir):
    out, texts = compact
    id_map = load_id_map(out)
    table = pq.read_table(out / "id_map.parquet")
    assert table.schema.field("compact_id").type == pa.int32()
    assert table.schema.field("qwen3_id").type == pa.int32()
    assert table.schema.field("token").type == pa.string()
    n_added = len(QWEN3_ADDED_TOKENS)
    n_bpe = len(id_map) - n_added
    assert 256 < n_bpe < 5000  # far smaller than Qwen3
    assert np.array_equal(id_map[:256], np.arange(256))  # Qwen's 256 byte tokens are ranks 0..255
    assert np.all(np.diff(id_map[:n_bpe]) > 0)  # sorted by original id
    assert id_map[n_bpe:].tolist() == list(range(151643, 151669))
    tokens = table.column("token").to_pylist()
    assert tokens[n_bpe:] == [t for t, _ in QWEN3_ADDED_TOKENS]
    assert tokens[table.column("qwen3_id").to_pylist().index(9707)] == "Hello"
    data = json.loads((out / "tokenizer.json").read_text())
    vocab, merges = data["model"]["vocab"], data["model"]["merges"]
    full_vocab = json.loads((qwen3_dir / "tokenizer.json").read_text())["model"]["vocab"]
    # every multi-byte token has exactly one merge, its parts are kept, ranks preserved
    assert len(merges) == n_bpe - 256
    assert sorted(a + b for a, b in merges) == sorted(t for t in vocab if len(t) > 1)
    assert all(a in vocab and b in vocab for a, b in merges)
    assert [full_vocab[a + b] for a, b in merges] == sorted(full_vocab[a + b] for a, b in merges)
    assert all(full_vocab[t] == id_map[i] for t, i in vocab.items())
    cfg = json.loads((out / "tokenizer_config.json").read_text())
    assert cfg["eos_token"] == "<|im_end|>" and cfg["pad_token"] == "<|endoftext|>"
    assert cfg["added_tokens_decoder"][str(n_bpe + 2)]["content"] == "<|im_end|>"


def test_compact_hf_special_tokens_and_template(compact):
    from transformers import AutoTokenizer

    out, _ = compact
    id_map = load_id_map(out)
    chf = AutoTokenizer.from_pretrained(out)
    assert id_map[chf.eos_token_id] == 151645 and id_map[chf.pad_token_id] == 151643
    assert id_map[chf.convert_tokens_to_ids("<think>")] == 151667
    prompt = chf.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_compact_unseen_text_still_encodes_but_finer(compact, qwen3_tk):
    out, _ = compact
    id_map = load_id_map(out)
    ctk = Tokenizer.from_file(str(out / "tokenizer.json"))
    text = " zebra quokka xylophone"
    comp, full = ctk.encode(text), qwen3_tk.encode(text)
    assert ctk.decode(comp.ids) == text
    assert len(comp.ids) > len(full.ids)  # exactness holds on the corpus only
    assert "".join(comp.tokens) == "".join(full.tokens)
    assert set(id_map[comp.ids].tolist()) <= set(id_map.tolist())


def test_load_id_map_rejects_gaps(tmp_path):
    pq.write_table(
        pa.table({"compact_id": pa.array([0, 2], pa.int32()), "qwen3_id": pa.array([5, 6], pa.int32()),
                  "token": ["a", "b"]}),
        tmp_path / "id_map.parquet",
    )
    with pytest.raises(ValueError, match="dense"):
        load_id_map(tmp_path)


# ----------------------------------------------------------------------------- scripts


@pytest.mark.skipif(importlib.util.find_spec("snakemake") is None, reason="snakemake not installed")
def test_compact_script_under_snakemake(tmp_path, qwen3_dir, qwen3_tk):
    """build_compact_tokenizer.py as a Snakemake `script:` over the session's Qwen3 tokenizer (not rebuilt here:
    the Qwen3 script runs in the smoke DAG, checked by test_qwen3_script_in_the_smoke_dag)."""
    texts = ["Hello, world!", "<|im_start|>user\nSolve $\\frac{1}{2}$.<|im_end|>\n", "**Step 1:**\n\n"]
    pq.write_table(pa.table({"text": texts}), tmp_path / "texts.parquet")
    shutil.copytree(qwen3_dir, tmp_path / "full")
    scripts = REPO / "workflow_scripts"
    (tmp_path / "Snakefile").write_text(
        f"""
rule compact:
    input: full="full", texts="texts.parquet"
    output: dir=directory("compact")
    log: "logs/compact.log"
    script: "{scripts / 'build_compact_tokenizer.py'}"
"""
    )
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-c1", "--quiet"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "compact tokenizer" in (tmp_path / "logs/compact.log").read_text()
    id_map = load_id_map(tmp_path / "compact")
    ctk = Tokenizer.from_file(str(tmp_path / "compact/tokenizer.json"))
    for text in texts:
        assert id_map[ctk.encode(text).ids].tolist() == qwen3_tk.encode(text).ids


@pytest.mark.slow  # reads the shared smoke DAG
def test_qwen3_script_in_the_smoke_dag(smoke_results, qwen3_dir):
    """build_qwen3_tokenizer.py, run by the smoke DAG's qwen3_tokenizer rule in its own process, logs its build and
    writes files byte-identical to the library's build in this process."""
    built = smoke_results / "tokenizer" / "qwen3"
    assert sorted(f for f in os.listdir(built) if not f.startswith(".")) == ["tokenizer.json", "tokenizer_config.json"]
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (built / name).read_bytes() == (qwen3_dir / name).read_bytes(), name
    assert "built Qwen3 tokenizer" in (smoke_results / "logs" / "qwen3_tokenizer.log").read_text()
