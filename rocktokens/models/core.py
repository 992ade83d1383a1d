"""Tiny Qwen3 models for the embedded world, and the loading/saving used at both scales.

The embedded teacher is a tiny ``Qwen3MoeForCausalLM`` (mirrors Qwen3-30B-A3B, a mixture of experts) and
the student a tiny dense ``Qwen3ForCausalLM`` (mirrors Qwen3-4B). At paper scale the same functions load
the real checkpoints from a local directory (staged beforehand; nothing is downloaded here).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from rocktokens.core.io import atomic_dir


class VocabMismatchError(ValueError):
    """Teacher and student do not share one tokenizer/vocabulary: token-level KL is undefined."""


def _pad_to(n: int, multiple: int) -> int:
    return ((n + multiple - 1) // multiple) * multiple


def build_toy_model(arch: dict, vocab_size: int, tokenizer, seed: int):
    """A freshly initialised tiny model. ``arch['type']`` is ``qwen3`` (dense) or ``qwen3_moe``."""
    from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM

    kind = arch["type"]
    common = dict(
        vocab_size=_pad_to(vocab_size, arch.get("pad_vocab_to", 64)),
        hidden_size=arch["hidden_size"],
        num_hidden_layers=arch["num_layers"],
        num_attention_heads=arch["num_heads"],
        num_key_value_heads=arch["num_kv_heads"],
        head_dim=arch["head_dim"],
        intermediate_size=arch["intermediate_size"],
        max_position_embeddings=arch["max_position_embeddings"],
        tie_word_embeddings=arch.get("tie_word_embeddings", True),
        rope_theta=10000.0,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    if kind == "qwen3":
        return Qwen3ForCausalLM(Qwen3Config(**common))
    if kind == "qwen3_moe":
        cfg = Qwen3MoeConfig(
            **common,
            num_experts=arch["num_experts"],
            num_experts_per_tok=arch["num_experts_per_tok"],
            moe_intermediate_size=arch["moe_intermediate_size"],
            decoder_sparse_step=1,
            norm_topk_prob=True,
            router_aux_loss_coef=0.0,
        )
        return Qwen3MoeForCausalLM(cfg)
    raise ValueError(f"unknown toy architecture type {kind!r} (expected 'qwen3' or 'qwen3_moe')")


def _require_dir(path, what: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"{what} not found: {p} (is it staged / built?)")
    return p


def load_model(path, dtype: str = "float32", device: str | torch.device = "cpu"):
    """Load a causal LM from a local HF directory (never from a hub)."""
    from transformers import AutoModelForCausalLM

    p = _require_dir(path, "model directory")
    if not (p / "config.json").exists():
        raise FileNotFoundError(f"model directory {p} has no config.json")
    model = AutoModelForCausalLM.from_pretrained(p, dtype=getattr(torch, dtype), local_files_only=True)
    return model.to(device)


def scoring_devices(n_students: int) -> tuple[str, list[str]]:
    """Where a scoring job puts its models: the teacher alone on the first GPU, the students round-robin over the
    others (all on the one GPU when there is one; CPU without GPUs). Teacher-forced scoring moves each chunk's
    hidden states to the other model's device (``rocktokens.tokens.kl``), so any placement gives the same numbers."""
    if not torch.cuda.is_available():
        return "cpu", ["cpu"] * n_students
    n = torch.cuda.device_count()
    others = [f"cuda:{i}" for i in range(1, n)] or ["cuda:0"]
    return "cuda:0", [others[i % len(others)] for i in range(n_students)]


def load_tokenizer(path):
    from transformers import AutoTokenizer

    p = _require_dir(path, "tokenizer directory")
    return AutoTokenizer.from_pretrained(p, local_files_only=True)


def check_same_vocab(teacher_tok, student_tok, teacher_model=None, student_model=None) -> None:
    """Raise :class:`VocabMismatchError` unless teacher and student share tokenizer and output layer size."""
    vt, vs = teacher_tok.get_vocab(), student_tok.get_vocab()
    if vt != vs:
        only_t = len(set(vt) - set(vs))
        only_s = len(set(vs) - set(vt))
        moved = sum(1 for k in set(vt) & set(vs) if vt[k] != vs[k])
        raise VocabMismatchError(
            f"teacher/student vocabulary mismatch: {len(vt)} vs {len(vs)} tokens "
            f"({only_t} only in teacher, {only_s} only in student, {moved} with different ids)"
        )
    if teacher_model is not None and student_model is not None:
        nt = teacher_model.get_output_embeddings().weight.shape[0]
        ns = student_model.get_output_embeddings().weight.shape[0]
        if nt != ns:
            raise VocabMismatchError(f"teacher/student output layers differ: {nt} vs {ns} rows")


def final_hidden(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Final (normed) hidden states ``[B, L, H]`` — the input of the output layer.

    A bare HF model: its decoder body alone runs (no logits are formed). A wrapped model (DDP: ``.module``;
    FSDP2: ``.unshard``): the *wrapper's* forward must run, or DDP never synchronises gradients across ranks and
    FSDP never gathers parameters — so the whole model runs with ``logits_to_keep=1`` (one position's logits, the
    cheapest full forward) and the normed hidden states are taken from a hook on the final norm.
    """
    if not (hasattr(model, "module") or hasattr(model, "unshard")):
        return model.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    inner = model.module if hasattr(model, "module") else model
    captured = []
    handle = inner.model.norm.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=1)
    finally:
        handle.remove()
    return captured[-1]


def output_weight(model) -> torch.Tensor:
    m = model.module if hasattr(model, "module") else model
    return m.get_output_embeddings().weight


def save_checkpoint(model, tokenizer, out_dir, extra: dict | None = None, state_dict=None) -> None:
    """``save_pretrained`` model + tokenizer atomically: loadable by transformers and vLLM."""
    m = model.module if hasattr(model, "module") else model
    with atomic_dir(out_dir) as tmp:
        m.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
        tokenizer.save_pretrained(tmp)
        if extra:
            (Path(tmp) / "rocktokens.json").write_text(json.dumps(extra, indent=2, sort_keys=True))
