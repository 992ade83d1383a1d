"""Backend-independent generation interface.

A *generation backend* turns already chat-formatted, tokenized prompts into
sampled continuations.  Two backends implement it:

* ``"hf"``   -- :class:`rocktokens.generation.hf.HFBackend`, batched
  ``transformers`` ``generate`` on CPU (tiny models, tests, smoke runs);
* ``"vllm"`` -- :class:`rocktokens.generation.vllm_backend.VLLMBackend`,
  vLLM on GPU (the paper-scale runs).

Contract shared by both backends
--------------------------------
* The sampled continuation depends only on ``(model, prompt_ids, seed,
  params, banned_ids, local_ban)`` -- not on which other requests share the call, nor on
  the batch size (up to floating-point noise of the model's forward pass, see
  the backend docs).
* ``banned_ids`` get logit ``-inf`` at every decoding step (token knockout,
  paper Eq. 17); a banned id can never be produced.
* ``local_ban`` (a :class:`LocalBan`, optional) gets logit ``-inf`` for its
  ids at exactly the steps where :meth:`LocalBan.active` holds for the tokens
  generated so far (a *local* knockout: inside a matching context only); its
  ids can never be produced at such a step, and are untouched at the others.
* ``logprobs[i]`` is the log-probability of ``token_ids[i]`` under the
  model's *raw* next-token distribution (temperature 1, no top-p, no banned
  mask), i.e. ``log_softmax(logits)[token]``.
* ``token_ids`` includes the stop token when one was produced
  (``finish_reason == "stop"``); otherwise ``finish_reason == "length"`` and
  exactly ``max_new_tokens`` tokens were produced.
"""

from __future__ import annotations

import abc
import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import combinations

__all__ = [
    "SamplingParams",
    "LocalBan",
    "GenerationRequest",
    "GenerationResult",
    "GenerationBackend",
    "make_backend",
    "validate_params",
    "validate_requests",
    "BACKENDS",
]

BACKENDS = ("hf", "vllm")

# torch.Generator.manual_seed accepts [-2**63, 2**64); we only allow the
# non-negative part so that seeds mean the same thing in both backends.
_MAX_SEED = 2**64 - 1


@dataclass(frozen=True)
class SamplingParams:
    """Decoding parameters shared by all requests of one ``generate`` call.

    ``temperature == 0`` means greedy decoding (argmax of the masked logits;
    ``top_p`` is then irrelevant).
    """

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256


#: A left-context position before the response's first token: the sentinel of ``rocktokens.rocks.context.PAD``.
PAD = -1
LOCAL_SIMILARITIES = ("positional", "bag")  # as rocktokens.rocks.context.SIMILARITIES
LOCAL_PAD_POLICIES = ("never", "equal")  # as rocktokens.rocks.context.PAD_POLICIES


def _int_tuple(xs, what: str, lo: int) -> tuple[int, ...]:
    xs = tuple(xs)
    bad = [x for x in xs if not _is_int(x) or x < lo]
    if bad:
        raise ValueError(f"LocalBan: {what} must be integers >= {lo}, got {bad[:5]}")
    return tuple(int(x) for x in xs)


@dataclass(frozen=True)
class LocalBan:
    """A ban that holds only inside a matching left context: the *local* window knockout.

    ids:         the ids whose logit is ``-inf`` while the ban is active (non-empty).
    contexts:    stored left contexts, each ``w`` ids at offsets −w … −1 of the position they precede, with
                 :data:`PAD` (−1) where that offset lay before the response.
    min_matches: m, the least number of agreeing elements for a live left context to match a stored one (0 ≤ m ≤ w).
    reach:       r ≥ 0, the steps the ban stays active after a step whose left context matched.
    similarity:  ``"positional"`` (agreement = offsets holding the same id) or ``"bag"`` (size of the multiset
                 intersection) -- Eq. 8's two similarities (``rocktokens.rocks.context``), on w elements.
    pad_policy:  ``"never"`` (a PAD agrees with nothing) or ``"equal"`` (PAD is an ordinary symbol), as there.

    **The rule.** Let y_0 … y_{t−1} be the tokens generated so far. The prompt is *not* part of them: the live
    left context of step s is (y_{s−w}, …, y_{s−1}) with PAD where s − j < 0 -- how the stored contexts treat
    positions before the response (they come from responses, ``rocktokens.rocks.context.context_windows``). Step s
    *matches* iff its live left context agrees with at least one stored context on ≥ m elements. The ban is
    **active at step t iff some step s ∈ [t − r, t] matches**: from the step at which a stored context is
    recognised (the step that would emit the token those contexts surround) through the r steps after it.

    The match test is exact and does not loop over the stored contexts: two contexts agree on ≥ m elements iff
    they share a size-m sub-pattern (positional: the ids at one m-subset of offsets; bag: one sub-multiset of size
    m), so the stored contexts are indexed once by their sub-patterns (:attr:`keys`) and a live context is looked
    up with C(w, m) probes (``rocktokens.rocks.windows.ContextIndex`` does the same for whole windows). No stored
    context: never active; m = 0: always active.
    """

    ids: tuple[int, ...]
    contexts: tuple[tuple[int, ...], ...]
    min_matches: int
    reach: int = 0
    similarity: str = "positional"
    pad_policy: str = "never"

    def __post_init__(self):
        ids = tuple(sorted(set(_int_tuple(self.ids, "ids", 0))))
        if not ids:
            raise ValueError("LocalBan: ids is empty (nothing to ban)")
        contexts = tuple(_int_tuple(c, "context ids", PAD) for c in self.contexts)
        widths = {len(c) for c in contexts}
        if len(widths) > 1 or 0 in widths:
            raise ValueError(f"LocalBan: every stored context needs the same w >= 1 ids, got widths {sorted(widths)}")
        w = widths.pop() if widths else None
        m = self.min_matches
        if not _is_int(m) or m < 0 or (w is not None and m > w):
            raise ValueError(f"LocalBan: min_matches must be an integer in [0, w = {w}], got {m!r}")
        if not _is_int(self.reach) or self.reach < 0:
            raise ValueError(f"LocalBan: reach must be an integer >= 0, got {self.reach!r}")
        if self.similarity not in LOCAL_SIMILARITIES:
            raise ValueError(f"LocalBan: similarity {self.similarity!r} not in {LOCAL_SIMILARITIES}")
        if self.pad_policy not in LOCAL_PAD_POLICIES:
            raise ValueError(f"LocalBan: pad_policy {self.pad_policy!r} not in {LOCAL_PAD_POLICIES}")
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "contexts", contexts)
        object.__setattr__(self, "min_matches", int(m))
        object.__setattr__(self, "reach", int(self.reach))

    @property
    def w(self) -> int:
        """Width of the stored left contexts (0 when there are none)."""
        return len(self.contexts[0]) if self.contexts else 0

    def _patterns(self, ctx: Sequence[int]) -> Iterator[tuple]:
        """The size-m sub-patterns of one context (none holds a PAD under ``pad_policy="never"``)."""
        never = self.pad_policy == "never"
        if self.similarity == "positional":
            for sub in combinations(range(len(ctx)), self.min_matches):
                vals = tuple(ctx[j] for j in sub)
                if not (never and PAD in vals):
                    yield sub, vals
        else:
            yield from combinations(sorted(x for x in ctx if not (never and x == PAD)), self.min_matches)

    @cached_property
    def keys(self) -> frozenset:
        """Every size-m sub-pattern of the stored contexts (built once, on first use)."""
        return frozenset(p for c in self.contexts for p in self._patterns(c))

    def _left(self, tokens: Sequence[int], s: int) -> tuple[int, ...]:
        return tuple(int(tokens[j]) if j >= 0 else PAD for j in range(s - self.w, s))

    def matches_at(self, tokens: Sequence[int], s: int) -> bool:
        """Does step s (whose left context is ``tokens[s − w : s]``, PAD before 0) match a stored context?"""
        if not self.contexts:
            return False
        keys = self.keys
        return any(p in keys for p in self._patterns(self._left(tokens, s)))

    def active(self, generated: Sequence[int]) -> bool:
        """Is the ban active at the next step, given the tokens ``generated`` so far (the prompt excluded)?"""
        t = len(generated)
        return any(self.matches_at(generated, s) for s in range(max(0, t - self.reach), t + 1))

    def active_steps(self, tokens: Sequence[int]) -> list[bool]:
        """For each generated token ``tokens[t]``: was the ban active at the step that chose it?"""
        hit = [self.matches_at(tokens, s) for s in range(len(tokens))]
        out, last = [], None  # last matching step so far
        for t, h in enumerate(hit):
            last = t if h else last
            out.append(last is not None and t - last <= self.reach)
        return out

    def to_dict(self) -> dict:
        """Plain lists/ints/strings (JSON, vLLM ``extra_args``); :meth:`from_dict` inverts it."""
        return {"ids": list(self.ids), "contexts": [list(c) for c in self.contexts], "min_matches": self.min_matches,
                "reach": self.reach, "similarity": self.similarity, "pad_policy": self.pad_policy}

    @classmethod
    def from_dict(cls, d: Mapping) -> "LocalBan":
        if not isinstance(d, Mapping):
            raise ValueError(f"LocalBan: expected a mapping, got {type(d).__name__}")
        unknown = sorted(set(d) - {"ids", "contexts", "min_matches", "reach", "similarity", "pad_policy"})
        if unknown:
            raise ValueError(f"LocalBan: unknown field(s) {unknown}")
        return cls(**d)


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt to continue.

    prompt_ids: already chat-formatted and tokenized prompt.
    seed:       per-request seed (non-negative int).
    banned_ids: ids whose logit is ``-inf`` at every decoding step.
    local_ban:  ids whose logit is ``-inf`` at the steps where a :class:`LocalBan` is active (None: none).
    """

    prompt_ids: tuple[int, ...]
    seed: int
    banned_ids: tuple[int, ...] = ()
    local_ban: LocalBan | None = None


@dataclass
class GenerationResult:
    """Generated continuation of one request (see the module docstring)."""

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" | "length"

    def __post_init__(self):
        if len(self.token_ids) != len(self.logprobs):
            raise ValueError(
                f"GenerationResult: {len(self.token_ids)} token ids but {len(self.logprobs)} logprobs"
            )
        if self.finish_reason not in ("stop", "length"):
            raise ValueError(f"GenerationResult: finish_reason must be 'stop' or 'length', got {self.finish_reason!r}")


def validate_params(params: SamplingParams) -> None:
    """Raise ``ValueError`` (one clear message) for invalid sampling parameters."""
    if not isinstance(params, SamplingParams):
        raise TypeError(f"params must be a rocktokens SamplingParams, got {type(params).__name__}")
    t = params.temperature
    if isinstance(t, bool) or not isinstance(t, numbers.Real) or math.isnan(t) or math.isinf(t):
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {t!r}")
    if t < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {t}")
    p = params.top_p
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not (0.0 < p <= 1.0):
        raise ValueError(f"top_p must be in (0, 1], got {p!r}")
    n = params.max_new_tokens
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1, got {n!r}")


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def validate_requests(requests: Sequence[GenerationRequest], vocab_size: int) -> None:
    """Raise ``ValueError`` (one clear message naming the request) for invalid requests.

    Checks: non-empty prompt; prompt ids and banned ids in ``[0, vocab_size)``;
    seed a non-negative integer < 2**64; a local ban a :class:`LocalBan` whose
    ids and stored contexts lie in the vocabulary (PAD aside); banned and
    locally banned ids together not covering the whole vocabulary (nothing
    could be sampled).
    """
    for i, req in enumerate(requests):
        if not isinstance(req, GenerationRequest):
            raise TypeError(f"request {i}: expected GenerationRequest, got {type(req).__name__}")
        if len(req.prompt_ids) == 0:
            raise ValueError(f"request {i}: empty prompt (prompt_ids has no tokens)")
        bad = [t for t in req.prompt_ids if not _is_int(t) or not 0 <= t < vocab_size]
        if bad:
            raise ValueError(f"request {i}: prompt id(s) {bad[:5]} outside the vocabulary [0, {vocab_size})")
        if not _is_int(req.seed) or not 0 <= req.seed <= _MAX_SEED:
            raise ValueError(f"request {i}: seed must be an integer in [0, 2**64), got {req.seed!r}")
        bad = [t for t in req.banned_ids if not _is_int(t) or not 0 <= t < vocab_size]
        if bad:
            raise ValueError(f"request {i}: banned id(s) {bad[:5]} outside the vocabulary [0, {vocab_size})")
        ban = req.local_ban
        if ban is not None:
            if not isinstance(ban, LocalBan):
                raise TypeError(f"request {i}: local_ban must be a LocalBan or None, got {type(ban).__name__}")
            bad = [t for t in (*ban.ids, *(x for c in ban.contexts for x in c)) if t >= vocab_size]
            if bad:
                raise ValueError(f"request {i}: local ban id(s) {bad[:5]} outside the vocabulary [0, {vocab_size})")
        if len(set(req.banned_ids) | set(ban.ids if ban is not None else ())) >= vocab_size:
            raise ValueError(f"request {i}: banned_ids cover the whole vocabulary; nothing can be sampled")


class GenerationBackend(abc.ABC):
    """Abstract generation backend; use as a context manager to ``close`` it.

    Subclasses set ``vocab_size`` and implement :meth:`_generate`; :meth:`generate` validates first.
    """

    vocab_size: int

    def _is_closed(self) -> bool:
        return False

    def generate(self, requests: Sequence[GenerationRequest], params: SamplingParams) -> list[GenerationResult]:
        """Generate one continuation per request, in the order of ``requests``."""
        if self._is_closed():
            raise RuntimeError(f"{type(self).__name__} is closed")
        validate_params(params)
        requests = list(requests)
        if not requests:
            return []
        validate_requests(requests, self.vocab_size)
        return self._generate(requests, params)

    @abc.abstractmethod
    def _generate(self, requests: list[GenerationRequest], params: SamplingParams) -> list[GenerationResult]:
        """Backend-specific generation of already validated, non-empty ``requests``."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the model / engine.  Idempotent."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def make_backend(
    name: str,
    model_dir: str,
    *,
    stop_ids: Sequence[int],
    batch_size: int = 64,
    **options,
) -> GenerationBackend:
    """Build a backend by name: ``"hf"`` or ``"vllm"``.

    ``options`` are backend specific (see :class:`HFBackend` and
    :class:`VLLMBackend`).  The vLLM backend imports ``vllm`` lazily and raises
    a clear ``ImportError`` when it is not installed.
    """
    if name == "hf":
        from .hf import HFBackend

        return HFBackend(model_dir, stop_ids=stop_ids, batch_size=batch_size, **options)
    if name == "vllm":
        from .vllm_backend import VLLMBackend

        return VLLMBackend(model_dir, stop_ids=stop_ids, batch_size=batch_size, **options)
    raise ValueError(f"unknown generation backend {name!r}; expected one of {', '.join(BACKENDS)}")
