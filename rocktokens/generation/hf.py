"""CPU generation backend on ``transformers`` ``model.generate``.

How sampling is made per-request deterministic
----------------------------------------------
``generate`` runs in *greedy* mode (``do_sample=False``) with KV cache, left
padding and an attention mask.  All sampling happens inside
:class:`SeededSampler`, a ``LogitsProcessor`` that at each step

1. records the raw ``log_softmax`` of the model's next-token logits at the
   token it chooses (temperature 1, no top-p, no mask);
2. applies the per-row banned mask (``-inf``) -- the request's static
   ``banned_ids`` plus, at the steps where its :class:`LocalBan` is active
   for the row's tokens so far, the local ban's ids -- temperature and top-p;
3. draws the token by inverse-CDF sampling with one uniform number per step
   taken from that row's own ``torch.Generator`` seeded with the request seed
   (``temperature == 0``: argmax of the masked logits);
4. returns scores that are ``-inf`` everywhere but the chosen id, so greedy
   ``generate`` emits exactly it.

Because a row's random stream belongs to its request alone, the sample does
not depend on the other requests of the batch, on the batch size or on the
order of the requests; and because the uniform stream is consumed one number
per step, a run with a smaller ``max_new_tokens`` yields a prefix of a run
with a larger one.

The sampler sees the model's raw next-token logits by construction:
``generate`` runs with ``do_sample=False`` (no temperature/top-k/top-p
warpers) against a blank ``model.generation_config`` swapped in for the call,
so no checkpoint default (``top_k``, ``repetition_penalty``,
``suppress_tokens``, ``min_new_tokens``, extra ``eos_token_id`` ...) can add
a processor; ours is the only one.  Checked at run time: the tokens
``generate`` emitted equal the tokens the sampler chose (else
``RuntimeError``).

Caveat: the model's forward pass is not bitwise batch invariant on CPU
(different padding lengths / GEMM shapes change logits by ~1e-7 relative), so
"independent of the batch" holds up to that noise: a token can flip only when
the uniform number falls within ~1e-7 of a CDF boundary (or, greedy, when the
two best logits tie to ~1e-6).  Logprobs agree to ~1e-6.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from transformers import LogitsProcessor

from .base import (
    GenerationBackend,
    GenerationRequest,
    GenerationResult,
    LocalBan,
    SamplingParams,
)

__all__ = ["HFBackend", "SeededSampler", "select_tokens"]


def _nucleus_keep(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Boolean ``[B, V]`` mask of the top-p nucleus of each row.

    Same rule as HF ``TopPLogitsWarper`` and vLLM: sort ascending and drop the
    tokens whose ascending cumulative probability is <= ``1 - top_p`` (the
    most likely token is always kept) -- i.e. keep the smallest set of most
    likely tokens with total probability >= ``top_p``.  Implemented as a
    threshold: every token at least as probable as the least probable kept one
    is kept, so tokens tied at the boundary are all kept (a sort-order tie
    break would depend on the sort implementation).  The threshold is found
    on float32-rounded probabilities (numpy's float32 value sort is ~7x faster
    than ``torch.sort`` on CPU); masses are summed in float64.
    """
    p32 = probs.to(torch.float32)
    if p32.device.type == "cpu":
        import numpy as np

        asc = torch.from_numpy(np.sort(p32.numpy(), axis=-1))
    else:
        asc = p32.sort(dim=-1).values
    beyond = asc.to(torch.float64).cumsum(dim=-1) > (1.0 - top_p)
    beyond[:, -1] = True  # always keep the most likely token
    first_kept = beyond.to(torch.int8).argmax(dim=-1, keepdim=True)
    threshold = asc.gather(1, first_kept).to(p32.device)
    return p32 >= threshold


def select_tokens(
    raw_logits: torch.Tensor,
    uniforms: torch.Tensor | None,
    *,
    temperature: float,
    top_p: float,
    ban_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Choose one token per row (pure function; no randomness of its own).

    raw_logits: ``[B, V]`` float logits; ``uniforms``: ``[B]`` float64 in
    ``[0, 1)`` (unused when greedy); ``ban_mask``: ``[B, V]`` bool, True =
    banned (-inf).  Returns ``[B]`` int64 token ids.

    ``temperature == 0`` -> argmax of the masked logits (first index on ties).
    Otherwise ``softmax((logits - max) / T)`` in float64, top-p nucleus
    filtering (see :func:`_nucleus_keep`), then inverse-CDF sampling in
    vocabulary order: the first token whose CDF exceeds ``u * total``.
    """
    x = raw_logits
    if ban_mask is not None:
        x = x.masked_fill(ban_mask, float("-inf"))
    if temperature == 0:
        return x.argmax(dim=-1)
    x = x.to(torch.float64)
    x = (x - x.amax(dim=-1, keepdim=True)) / temperature
    probs = torch.softmax(x, dim=-1)
    if top_p < 1.0:
        probs = probs.masked_fill(~_nucleus_keep(probs, top_p), 0.0)
    cdf = probs.cumsum(dim=-1)
    target = uniforms.to(device=cdf.device, dtype=torch.float64) * cdf[:, -1]
    tok = torch.searchsorted(cdf, target.unsqueeze(1), right=True).squeeze(1)
    vocab = probs.shape[1]
    tok = tok.clamp_(max=vocab - 1)
    # u * total can round up to total (tok == V, clamped above onto a token
    # that may have no mass): fall back to the last token with mass.
    empty = probs.gather(1, tok.unsqueeze(1)).squeeze(1) <= 0
    if bool(empty.any()):
        rows = empty.nonzero().squeeze(1)
        last_positive = vocab - 1 - (probs[rows] > 0).flip(dims=[1]).to(torch.int8).argmax(dim=1)
        tok[rows] = last_positive
    return tok


class SeededSampler(LogitsProcessor):
    """``LogitsProcessor`` that samples each row from its own seeded stream.

    One instance serves one ``generate`` call (one batch).  After the call,
    ``chosen`` / ``logprobs`` hold one ``[B]`` tensor per decoding step.
    ``local``: one :class:`LocalBan` or None per row; a row's local ids join
    its mask at exactly the steps where the ban is active for the tokens the
    row has generated so far (tracked here, the prompt excluded).
    """

    def __init__(
        self,
        *,
        seeds: Sequence[int],
        banned: Sequence[Sequence[int]],
        local: Sequence[LocalBan | None] | None = None,
        temperature: float,
        top_p: float,
        max_new_tokens: int,
        vocab_size: int,
        stop_ids: Sequence[int],
        request_index: Sequence[int],
        device: torch.device | str = "cpu",
    ):
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.max_new_tokens = int(max_new_tokens)
        self.request_index = list(request_index)
        self.seeds = list(seeds)
        self.device = torch.device(device)
        if self.temperature > 0:
            self.uniforms = torch.stack(
                [
                    torch.rand(self.max_new_tokens, generator=torch.Generator().manual_seed(int(s)), dtype=torch.float64)
                    for s in seeds
                ]
            ).to(self.device)
        else:
            self.uniforms = None
        if any(len(b) for b in banned):
            mask = torch.zeros(len(seeds), vocab_size, dtype=torch.bool)
            for row, ids in enumerate(banned):
                if ids:
                    mask[row, list(ids)] = True
            self.ban_mask = mask.to(self.device)
        else:
            self.ban_mask = None
        local = list(local) if local is not None else [None] * len(seeds)
        self.local = {row: ban for row, ban in enumerate(local) if ban is not None}
        self.history: dict[int, list[int]] = {row: [] for row in self.local}  # tokens generated so far
        self.vocab_size = int(vocab_size)
        self.stop = torch.tensor(sorted(set(stop_ids)), dtype=torch.long, device=self.device)
        self.done = torch.zeros(len(seeds), dtype=torch.bool, device=self.device)
        self.step = 0
        self.chosen: list[torch.Tensor] = []
        self.logprobs: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.step >= self.max_new_tokens:  # defensive: generate asked for one step too many
            raise RuntimeError(f"SeededSampler called for step {self.step} >= max_new_tokens={self.max_new_tokens}")
        raw = scores
        active = ~self.done
        # amax propagates NaN; +inf and all -inf rows are no distribution either.
        bad = ~torch.isfinite(raw.amax(dim=-1)) & active
        if bool(bad.any()):
            row = int(bad.nonzero()[0, 0])
            raise FloatingPointError(
                f"non-finite logits (NaN, +inf or all -inf) for request {self.request_index[row]} "
                f"(seed {self.seeds[row]}) at generation step {self.step}"
            )
        u = self.uniforms[:, self.step] if self.uniforms is not None else None
        tok = select_tokens(raw, u, temperature=self.temperature, top_p=self.top_p, ban_mask=self._step_mask())
        # Raw log-prob of the chosen token: log_softmax(raw)[tok].
        lp = torch.log_softmax(raw, dim=-1).gather(1, tok.unsqueeze(1)).squeeze(1)
        self.chosen.append(tok)
        self.logprobs.append(lp)
        if self.local:
            toks = tok.tolist()
            for row, hist in self.history.items():
                hist.append(toks[row])
        if self.stop.numel():
            self.done |= torch.isin(tok, self.stop)
        self.step += 1
        out = torch.full_like(raw, float("-inf"))
        out.scatter_(1, tok.unsqueeze(1), 0.0)
        return out


    def _step_mask(self) -> torch.Tensor | None:
        """The static mask plus the local bans active at this step (finished rows skipped)."""
        if not self.local:
            return self.ban_mask
        done = self.done.tolist()
        rows = [row for row, ban in self.local.items() if not done[row] and ban.active(self.history[row])]
        if not rows:
            return self.ban_mask
        mask = (self.ban_mask.clone() if self.ban_mask is not None
                else torch.zeros(len(self.seeds), self.vocab_size, dtype=torch.bool, device=self.device))
        for row in rows:
            mask[row, list(self.local[row].ids)] = True
        return mask


@contextlib.contextmanager
def _blank_generation_config(model):
    """Run ``generate`` against a blank ``model.generation_config``.

    ``generate`` fills every field our config leaves ``None`` from
    ``model.generation_config`` (e.g. a checkpoint's ``top_k=20``,
    ``suppress_tokens`` or ``eos_token_id``).  Swapping in a blank config for
    the duration of the call keeps the logits our sampler sees raw and the
    stop ids exactly ours.  Restored afterwards.
    """
    from transformers import GenerationConfig

    saved = model.generation_config
    model.generation_config = GenerationConfig()
    try:
        yield
    finally:
        model.generation_config = saved


class HFBackend(GenerationBackend):
    """Batched ``transformers`` generation with per-request seeded sampling.

    Either ``model_dir`` (a HF checkpoint directory, loaded once with
    ``AutoModelForCausalLM.from_pretrained``) or ``model`` (an already-built
    causal LM, e.g. the policy during training; it is put in eval mode for
    the call and its mode restored afterwards) must be given.

    Options: ``pad_id`` (default: first stop id, else 0; only fills left
    padding, masked out), ``device`` (default "cpu"), ``dtype`` (default
    ``torch.float32``; used when loading), ``progress`` (tqdm bar over batches;
    default True, hidden when stderr is not a TTY), ``num_threads`` (sets
    ``torch.set_num_threads`` when given), ``n_tokens`` (the tokenizer's size: output rows at or beyond it
    are padding and are never sampled).
    """

    def __init__(
        self,
        model_dir: str | None = None,
        *,
        model=None,
        stop_ids: Sequence[int] = (),
        batch_size: int = 64,
        pad_id: int | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        progress: bool = True,
        num_threads: int | None = None,
        n_tokens: int | None = None,
    ):
        if (model_dir is None) == (model is None):
            raise ValueError("HFBackend needs exactly one of model_dir or model")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if num_threads is not None:
            torch.set_num_threads(int(num_threads))
        if model is None:
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
            model.to(device)
            model.eval()
        self.model = model
        self.device = next(model.parameters()).device
        self.vocab_size = self._vocab_size(model)
        self.stop_ids = tuple(int(s) for s in stop_ids)
        bad = [s for s in self.stop_ids if not 0 <= s < self.vocab_size]
        if bad:
            raise ValueError(f"stop id(s) {bad} outside the vocabulary [0, {self.vocab_size})")
        if pad_id is None:
            pad_id = self.stop_ids[0] if self.stop_ids else 0
        if not 0 <= int(pad_id) < self.vocab_size:
            raise ValueError(f"pad_id {pad_id} outside the vocabulary [0, {self.vocab_size})")
        self.pad_id = int(pad_id)
        self.batch_size = batch_size
        self.progress = progress
        # Output rows beyond the tokenizer (embedding padding, e.g. 151,669..151,935 in Qwen3) are no tokens:
        # they are never sampled.
        if n_tokens is not None and not 0 < int(n_tokens) <= self.vocab_size:
            raise ValueError(f"n_tokens {n_tokens} outside (0, {self.vocab_size}]")
        self.padding_ids = tuple(range(int(n_tokens), self.vocab_size)) if n_tokens is not None else ()

    @staticmethod
    def _vocab_size(model) -> int:
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if head is not None and getattr(head, "weight", None) is not None:
            return int(head.weight.shape[0])
        return int(model.config.get_text_config().vocab_size)

    def close(self) -> None:
        self.model = None

    # ------------------------------------------------------------------ API
    def _is_closed(self) -> bool:
        return self.model is None

    def _generate(self, requests: list[GenerationRequest], params: SamplingParams) -> list[GenerationResult]:
        # Sort by prompt length (stable) so batches need little padding.
        order = sorted(range(len(requests)), key=lambda i: len(requests[i].prompt_ids))
        batches = [order[k : k + self.batch_size] for k in range(0, len(order), self.batch_size)]
        results: list[GenerationResult | None] = [None] * len(requests)

        from tqdm.auto import tqdm

        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode(), _blank_generation_config(self.model):
                for batch in tqdm(batches, desc="generate (hf)", unit="batch", disable=not self.progress):
                    for i, res in zip(batch, self._generate_batch([requests[i] for i in batch], batch, params)):
                        results[i] = res
        finally:
            if was_training:
                self.model.train()
        return results  # type: ignore[return-value]

    # ------------------------------------------------------------ internals
    def _generation_config(self, params: SamplingParams):
        from transformers import GenerationConfig

        # Greedy decoding over the sampler's one-hot scores; every processor
        # generate could add is explicitly neutral.
        return GenerationConfig(
            do_sample=False,
            num_beams=1,
            max_new_tokens=int(params.max_new_tokens),
            eos_token_id=list(self.stop_ids) if self.stop_ids else None,
            pad_token_id=self.pad_id,
            bos_token_id=None,
            use_cache=True,
            repetition_penalty=1.0,
            encoder_repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            encoder_no_repeat_ngram_size=0,
            remove_invalid_values=False,
            renormalize_logits=False,
            return_dict_in_generate=False,
            output_scores=False,
            output_logits=False,
        )

    def _generate_batch(
        self, reqs: list[GenerationRequest], index: list[int], params: SamplingParams
    ) -> list[GenerationResult]:
        from transformers import LogitsProcessorList

        n = len(reqs)
        plen = max(len(r.prompt_ids) for r in reqs)
        input_ids = torch.full((n, plen), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((n, plen), dtype=torch.long)
        for row, r in enumerate(reqs):
            k = len(r.prompt_ids)
            input_ids[row, plen - k :] = torch.tensor(r.prompt_ids, dtype=torch.long)
            attention_mask[row, plen - k :] = 1
        sampler = SeededSampler(
            seeds=[r.seed for r in reqs],
            banned=[tuple(r.banned_ids) + self.padding_ids for r in reqs],
            local=[r.local_ban for r in reqs],
            temperature=params.temperature,
            top_p=params.top_p,
            max_new_tokens=params.max_new_tokens,
            vocab_size=self.vocab_size,
            stop_ids=self.stop_ids,
            request_index=index,
            device=self.device,
        )
        sequences = self.model.generate(
            input_ids=input_ids.to(self.device),
            attention_mask=attention_mask.to(self.device),
            generation_config=self._generation_config(params),
            logits_processor=LogitsProcessorList([sampler]),
        )

        steps = len(sampler.chosen)
        chosen = torch.stack(sampler.chosen, dim=1).cpu() if steps else torch.empty((n, 0), dtype=torch.long)
        logprobs = torch.stack(sampler.logprobs, dim=1).cpu() if steps else torch.empty((n, 0))
        emitted = sequences[:, plen:].cpu()
        stop_set = set(self.stop_ids)
        out = []
        for row in range(n):
            toks = chosen[row].tolist()
            end, reason = len(toks), "length"
            for t, tok in enumerate(toks):
                if tok in stop_set:
                    end, reason = t + 1, "stop"
                    break
            if reason == "length" and end != params.max_new_tokens:
                raise RuntimeError(
                    f"request {index[row]}: generate stopped after {end} tokens without a stop token "
                    f"(max_new_tokens={params.max_new_tokens})"
                )
            if emitted.shape[1] < end or emitted[row, :end].tolist() != toks[:end]:
                raise RuntimeError(
                    f"request {index[row]}: transformers generate emitted tokens other than the ones the "
                    "sampler chose (some logits processor ran after ours)"
                )
            out.append(GenerationResult(token_ids=toks[:end], logprobs=logprobs[row, :end].tolist(), finish_reason=reason))
        return out
