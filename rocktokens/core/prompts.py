"""Chat-formatted prompts and (prompt, response) pairs as token sequences: one user turn, thinking disabled."""
from __future__ import annotations

from rocktokens.core.sequences import TokenSequence


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """Chat-format one user turn (thinking disabled) and tokenize it, ending with the assistant header."""
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True, enable_thinking=False
    )
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    return list(ids)


def eos_id(tokenizer) -> int:
    return tokenizer.convert_tokens_to_ids("<|im_end|>")


def stop_ids(tokenizer) -> list[int]:
    return sorted({eos_id(tokenizer), tokenizer.convert_tokens_to_ids("<|endoftext|>")})


def encode_pair(tokenizer, prompt: str, response: str) -> TokenSequence:
    p = encode_prompt(tokenizer, prompt)
    r = tokenizer(response, add_special_tokens=False)["input_ids"] + [eos_id(tokenizer)]
    return TokenSequence(ids=p + r, prompt_len=len(p))
