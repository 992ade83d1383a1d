"""GPU memory and time plan of a config, computed at parse time (issue 13): pure arithmetic, no torch.

For every GPU rule that asks for GPUs (``resources.<rule>.gpus``) the plan gives the memory one GPU needs at
the rule's peak and an estimate of its GPU-hours; :func:`check_gpu_plan` (called by ``rules/cluster.smk`` next to
:func:`rocktokens.workflow.cluster.check_parallelism`) refuses, with one message naming each rule and its numbers, a rule
whose peak does not fit the memory of its GPUs. ``python -m rocktokens.workflow.gpu_plan --configfile configs/paper.yaml``
(``make plan-paper``) prints the plan. Units: GiB = 2**30 bytes (what ``torch``/``nvidia-smi`` report); an
"80 GB" H100 holds 79.1 of them.

Model shapes: ``source: world`` derives them from ``models.<role>.arch`` (vocabulary: :data:`WORLD_VOCAB`);
``source: hub`` reads ``models.<role>.shape`` (the public ``config.json`` values; the hub is not reachable at
parse time). Parameters are counted exactly as the Hugging Face Qwen3 / Qwen3-MoE modules hold them
(:meth:`Shape.params`; tests/test_gpu_plan.py compares with ``sum(p.numel())``).

Memory per GPU (bytes; P = parameters, n = the rule's GPUs, b = micro-batch, T = sequence length, N = b·T
response positions at most, V = vocabulary, H = hidden size, c = ``loss_chunk``):

* training (stage1_kd, stage2_opd, opd_arm; FSDP2 FULL_SHARD over n ranks, ``envs/accelerate_fsdp.yaml``):
  student fp32 master weights 4P/n + fp32 gradients 4P/n + optimizer states 8P/n (AdamW: 2 fp32 states; SGD
  with momentum: 4P/n) + the teacher 2P_t/n (bf16, ``prepare_model(..., evaluation_mode=True)``) + for
  ``freeze.update_norm`` a copy of the local shard 4P/n; unsharded bf16 working copies: both root units
  (embeddings, output layer) and two decoder layers of the larger model (the one running + the prefetched one),
  and the bf16 gradient of two student layers before their reduce-scatter; activations with activation
  checkpointing (``fsdp_activation_checkpointing: true``): every layer's input b·T·H·2 (bf16) times the layers,
  plus one layer recomputed in the backward: its saved tensors and their gradients 2·b·T·a, with a (bytes per
  token of one layer's tensors saved for backward, bf16, fp32 RMSNorm inputs, flash/memory-efficient attention
  without T² scores) ≈ 16H + 10·q + 10·kv + 8·I (q, kv: query and key/value widths; I: the MLP width; an MoE
  layer: 8·k·I_moe + 4·k·H + 4E), :meth:`Shape.act_bytes_per_token`; the teacher's no-grad forward one layer at a
  time, b·T·a_t; the 4-D attention mask b·T²·2 of each model's forward; the chunked head + loss
  (rocktokens/core/losses.py ``chunked_loss_and_grads``): fp32 copies of both output layers (4·V·H_s + 4·V·H_t), the
  fp32 gradient of the student's output layer 4·V·H_s and its bf16 cast in the backward 2·V·H_s, hidden states and
  their fp32 gradient N·(2H_s + 4H_s + 2H_t), and :data:`HEAD_BUFFERS` fp32 ``[c, V]`` buffers live in one chunk
  (student and teacher logits and log-probabilities, the logit gradient, the divergence's temporaries); plus
  ``plan.overhead_gib`` per process (CUDA context, NCCL buffers, allocator fragmentation).
* OPD rollouts (``stage2.rollout_backend: vllm``): a vLLM engine per ``rollout_engine.tensor_parallel_size``
  ranks takes ``gpu_memory_utilization`` of each GPU; it needs the student's bf16 weights / TP, the KV cache of
  ``batch_size`` sequences of ``prompt_max_len + max_new_tokens`` and ``plan.vllm_overhead_gib`` (CUDA graphs,
  sampler, activation peak). Generation peak = the trainer's resident memory (master weights, optimizer states,
  the sharded teacher, overhead; gradients freed) + the engine's share. With ``sleep`` the engine releases
  weights and KV cache while the trainer updates (its overhead stays); without, its whole share stays.
  ``rollout_backend: hf``: each rank generates its share of a step on the FSDP student (KV cache in bf16).
* vLLM generation rules (teacher_samples, evaluate, evaluate_arm, evaluate_arm_start, knockout_shard, rollouts):
  weights / TP + KV cache for ``batch_size`` (max_num_seqs) sequences of min(``max_model_len``,
  ``stage2.prompt_max_len`` + max_new_tokens) + ``plan.vllm_overhead_gib`` must fit ``gpu_memory_utilization``
  of the GPU: every running sequence can reach its full length without preemption.
  KV bytes per token = layers × kv_heads/TP × head_dim × 2 (K, V) × dtype bytes.
* teacher-forced scoring (token_kl, gradient_geometry, arm_kl): the models it loads, whole, placed largest first
  on the least-loaded GPU; the teacher's output layer copied beside each student; the scoring workspace
  (token_kl/arm_kl: 3 fp32 ``[chunk, vocab_block]`` buffers; gradient_geometry: :data:`GEOMETRY_BUFFERS` fp32
  ``[chunk, V]`` and fp64 ``[3·max(Ks), V]`` accumulators); final hidden states and one layer's tensors of a
  ``tokens.batch_size`` micro-batch.

Time: FLOPs of a forward over a sequence of n tokens = 2·F·n + 2·L·q·n² (F: the matmul parameters one token
passes, active experts only, output layer included, embedding lookup free; the second term is causal attention);
generation (prefill + decode with a KV cache) costs one forward; a training sequence costs 4 student forwards
(forward, recomputation, backward = 2) + 1 teacher forward; teacher-forced scoring one forward per model.
GPU-hours = FLOPs / (``plan.peak_tflops`` × MFU) with ``plan.mfu.train`` for training and scoring and
``plan.mfu.generate`` for sampling (decode is memory-bound). Sequence lengths: ``plan.prompt_tokens`` (mean
prompt) + ``plan.mean_length_fraction`` × max_new_tokens (mean response), capped by the stage's max_len.
Job counts come from the config (shards, checkpoints × benchmarks, arms, knockout shards).
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from rocktokens.workflow.cluster import ClusterError

GIB = 2**30

#: Memory (GiB, as torch reports it) of the GPU models ``cluster.gpu_model`` may name; ``plan.gpu_memory_gib``
#: overrides (a 40 GB A100, another card).
GPU_MEMORY_GIB = {"h100": 79.1, "h200": 139.8, "a100": 79.1, "h800": 79.1, "b200": 178.4}

#: ``plan:`` settings and their defaults (schemas/config.schema.yaml documents them).
DEFAULTS = {
    "gpu_memory_gib": None,      # None: from cluster.gpu_model (GPU_MEMORY_GIB)
    "overhead_gib": 3.0,         # per process: CUDA context, NCCL buffers, allocator fragmentation
    "vllm_overhead_gib": 2.0,    # per vLLM engine GPU: CUDA graphs, sampler, activation peak
    "peak_tflops": 989.0,        # H100 SXM dense bf16
    "mfu": {"train": 0.25, "generate": 0.03},
    "prompt_tokens": 200,        # mean prompt length with the chat template
    "mean_length_fraction": 0.25,  # mean response length / max_new_tokens
    "benchmark_problems": {"math": 500, "ifeval": 541, "aime24": 30, "aime25": 30, "hmmt25": 30},
}

#: Vocabulary of the embedded world's models (the compact tokenizer is built in the DAG, ~700 ids): an upper
#: bound, the world's models never ask for GPUs.
WORLD_VOCAB = 1024

#: fp32 ``[loss_chunk, V]`` buffers live at once in one chunk of the head + loss: z_s, z_t, log p_s, log p_t,
#: the logit gradient, and the three temporaries of the divergence's gradient (p_s, A, p_s ⊙ (A − KL)).
HEAD_BUFFERS = 8
#: fp32 ``[chunk, V]`` buffers of the gradient-geometry stream (z_s, z_t, log p_s, log p_t, p_s, the gradient).
GEOMETRY_BUFFERS = 6

#: The rollout engine's settings when the config leaves them out (the schema's defaults).
ROLLOUT_ENGINE = {"tensor_parallel_size": 1, "gpu_memory_utilization": 0.3, "batch_size": 64, "sleep": True}

#: GPU rules -> their ``resources:`` key (evaluate_arm_start asks what evaluate_arm asks).
GPU_RULES = {rule: rule for rule in ("teacher_samples", "stage1_kd", "stage2_opd", "evaluate", "rollouts",
                                     "token_kl", "gradient_geometry", "arm_kl", "opd_arm", "evaluate_arm",
                                     "knockout_shard")}
GPU_RULES["evaluate_arm_start"] = "evaluate_arm"


class GpuPlanError(ClusterError):
    """A GPU rule does not fit the GPUs it asks for, or the plan lacks a value (the message names the key)."""


# ----------------------------------------------------------------------------------------------- shapes
@dataclass(frozen=True)
class Shape:
    """What the plan needs of a Qwen3 (dense) or Qwen3-MoE model."""

    type: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    intermediate: int = 0
    experts: int = 0
    experts_per_tok: int = 0
    moe_intermediate: int = 0

    @property
    def moe(self) -> bool:
        return self.type == "qwen3_moe"

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def layer_params(self, active: bool = False) -> int:
        """One decoder layer: q/k/v/o projections (no bias), q/k RMSNorms, two RMSNorms, the MLP (SwiGLU) or the
        MoE block (router + experts; ``active``: the ``experts_per_tok`` a token passes)."""
        h = self.hidden
        attn = 2 * h * self.q_dim + 2 * h * self.kv_dim + 2 * self.head_dim + 2 * h
        if self.moe:
            n = self.experts_per_tok if active else self.experts
            return attn + h * self.experts + n * 3 * h * self.moe_intermediate
        return attn + 3 * h * self.intermediate

    @property
    def embed_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def params(self) -> int:
        """Every parameter (tied embeddings counted once)."""
        head = 0 if self.tied else self.embed_params
        return self.layers * self.layer_params() + self.embed_params + head + self.hidden

    @property
    def active_params(self) -> int:
        head = 0 if self.tied else self.embed_params
        return self.layers * self.layer_params(active=True) + self.embed_params + head + self.hidden

    @property
    def flop_params(self) -> int:
        """Matmul parameters one token passes: the active decoder and the output layer (the lookup is free)."""
        return self.layers * self.layer_params(active=True) + self.embed_params

    @property
    def root_params(self) -> int:
        """The FSDP root unit: embeddings, output layer (untied), final norm."""
        return self.params - self.layers * self.layer_params()

    def kv_bytes_per_token(self, dtype_bytes: int = 2, tp: int = 1) -> int:
        """KV cache per token on one GPU: layers × kv_heads/TP × head_dim × 2 (K, V) × dtype bytes (heads are
        split over tensor-parallel ranks, replicated when there are fewer than ranks)."""
        return self.layers * math.ceil(self.kv_heads / tp) * self.head_dim * 2 * dtype_bytes

    def act_bytes_per_token(self) -> int:
        """Bytes per token of one decoder layer's tensors saved for backward (HF Qwen3 in bf16, flash/memory-
        efficient attention): each RMSNorm keeps its fp32 input, a bf16 cast and its output (8H, twice; 6 per
        width for the q/k norms), RoPE'd q and k, v, the attention output and its log-sum-exp, the MLP's gate, up,
        SiLU and product (8I), or for an MoE layer those of its k experts (8·k·I_moe), the routed copies of the
        token in and out (4·k·H), fp32 router probabilities (4E) and the routing indices and weights."""
        h, q, kv = self.hidden, self.q_dim, self.kv_dim
        attn = 16 * h + 10 * q + 10 * kv + 8 * self.heads + 4 * self.kv_heads + 4 * self.head_dim + 8
        if self.moe:
            k = self.experts_per_tok
            return attn + 8 * k * self.moe_intermediate + 4 * k * h + 4 * self.experts + 42 * k
        return attn + 8 * self.intermediate

    def forward_flops(self, n_tokens: float) -> float:
        """One causal forward over a sequence of ``n_tokens``: 2·F·n + 2·L·q·n²."""
        return 2 * self.flop_params * n_tokens + 2 * self.layers * self.q_dim * n_tokens**2


SHAPE_KEYS = {"type": "type", "hidden": "hidden_size", "layers": "num_layers", "heads": "num_heads",
              "kv_heads": "num_kv_heads", "head_dim": "head_dim", "intermediate": "intermediate_size",
              "experts": "num_experts", "experts_per_tok": "num_experts_per_tok",
              "moe_intermediate": "moe_intermediate_size"}


def model_shape(config: Mapping, role: str) -> Shape:
    """The shape of ``models.<role>``: its ``arch`` in the embedded world, its ``shape`` at hub scale."""
    m = config["models"][role]
    if config["source"] == "world":
        spec, key = dict(m["arch"]), f"models.{role}.arch"
        pad = int(spec.get("pad_vocab_to", 64))
        spec.setdefault("vocab_size", -(-WORLD_VOCAB // pad) * pad)
        spec.setdefault("tie_word_embeddings", True)
    else:
        spec, key = m.get("shape"), f"models.{role}.shape"
        if not spec:
            raise GpuPlanError(f"config key '{key}' is missing: the GPU plan needs the shape of "
                               f"{m.get('hub_id', role)} (its config.json: layers, hidden size, heads, vocabulary; "
                               "see configs/paper.yaml)")
    needed = ["type", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim", "vocab_size"]
    needed += (["num_experts", "num_experts_per_tok", "moe_intermediate_size"] if spec.get("type") == "qwen3_moe"
               else ["intermediate_size"])
    missing = [k for k in needed if k not in spec]
    if missing:
        raise GpuPlanError(f"config key '{key}': the GPU plan needs {', '.join(missing)}")
    kw = {f: spec[k] for f, k in SHAPE_KEYS.items() if k in spec}
    return Shape(vocab=int(spec["vocab_size"]), tied=bool(spec.get("tie_word_embeddings", False)), **kw)


# ----------------------------------------------------------------------------------------------- settings
def plan_settings(config: Mapping) -> dict:
    """``plan:`` with defaults filled in, and the GPU memory resolved (``None`` when unknown)."""
    p = {**DEFAULTS, **(config.get("plan") or {})}
    p["mfu"] = {**DEFAULTS["mfu"], **(p.get("mfu") or {})}
    p["benchmark_problems"] = {**DEFAULTS["benchmark_problems"], **(p.get("benchmark_problems") or {})}
    if p["gpu_memory_gib"] is None:
        model = str((config.get("cluster") or {}).get("gpu_model", "") or "").lower()
        p["gpu_memory_gib"] = GPU_MEMORY_GIB.get(model)
    return p


def rule_gpus(config: Mapping, rule: str) -> int:
    table = config["resources"]
    return int(table.get(GPU_RULES[rule], table["default"]).get("gpus", 0) or 0)


def _dtype_bytes(name: str | None) -> int:
    return 4 if name == "float32" else 2


def rollout_engine(config: Mapping) -> dict:
    return {**ROLLOUT_ENGINE, **(config["stage2"].get("rollout_engine") or {})}


def _n_prompts(config: Mapping, name: str) -> int:
    if config["source"] == "world":
        from rocktokens.world.generator import DEFAULT_WORLD_CONFIG

        return int({**DEFAULT_WORLD_CONFIG, **(config.get("world") or {})}[f"n_{name}"])
    d = config["datasets"][name]
    if d.get("stop") is None:
        raise GpuPlanError(f"config key 'datasets.{name}.stop' is missing: the GPU plan counts its prompts")
    return int(d["stop"]) - int(d.get("start", 0))


def _n_problems(config: Mapping, plan: Mapping, bench: str) -> int:
    if config["source"] == "world":
        from rocktokens.world.generator import DEFAULT_WORLD_CONFIG

        return int({**DEFAULT_WORLD_CONFIG, **(config.get("world") or {})}[f"n_bench_{bench}"])
    return int(plan["benchmark_problems"][bench])


# ----------------------------------------------------------------------------------------------- the plan
@dataclass
class RulePlan:
    """One GPU rule: GiB per GPU at each phase's peak (None: the rule has no such phase), its terms, GPU-hours."""

    rule: str
    gpus: int
    jobs: int
    gpu_hours: float = 0.0   # all jobs
    train: dict = field(default_factory=dict)   # term -> bytes per GPU (the training phase)
    generate: dict = field(default_factory=dict)  # term -> bytes per GPU (the generation phase)
    problems: list = field(default_factory=list)
    runtime_min: int = 0

    @staticmethod
    def _gib(terms: Mapping) -> float | None:
        return sum(terms.values()) / GIB if terms else None

    @property
    def train_gib(self) -> float | None:
        return self._gib(self.train)

    @property
    def generate_gib(self) -> float | None:
        return self._gib(self.generate)

    @property
    def peak_gib(self) -> float:
        return max(x for x in (self.train_gib, self.generate_gib, 0.0) if x is not None)

    def terms(self, phase: str, top: int = 4) -> str:
        t = self.train if phase == "train" else self.generate
        big = sorted(t.items(), key=lambda kv: -kv[1])[:top]
        return ", ".join(f"{k} {v / GIB:.1f}" for k, v in big)


@dataclass
class Plan:
    gpu_memory_gib: float | None
    rules: list
    settings: dict

    @property
    def gpu_hours(self) -> float:
        return sum(r.gpu_hours for r in self.rules)


def _hours(flops: float, plan: Mapping, kind: str) -> float:
    return flops / (plan["peak_tflops"] * 1e12 * plan["mfu"][kind]) / 3600


def _mean_len(plan: Mapping, max_new: int, cap: int | None = None) -> float:
    n = plan["prompt_tokens"] + plan["mean_length_fraction"] * max_new
    return min(n, cap) if cap else n


def _seq_len(config: Mapping, max_new: int) -> int:
    """Longest sequence of a vLLM generation: the prompt bound + max_new_tokens, within max_model_len."""
    n = int(config["stage2"]["prompt_max_len"]) + int(max_new)
    cap = config["generation"].get("max_model_len")
    return min(n, int(cap)) if cap else n


def _engine(shape: Shape, tp: int, batch: int, seq_len: int, dtype_bytes: int, plan: Mapping) -> dict:
    """A vLLM engine's needs on one of its GPUs (bytes)."""
    return {"weights": dtype_bytes * shape.params / tp,
            f"KV {batch}x{seq_len}": batch * seq_len * shape.kv_bytes_per_token(dtype_bytes, tp),
            "vLLM overhead": plan["vllm_overhead_gib"] * GIB}


def _generation_rule(config, plan, rule, gpus, jobs, shapes: Sequence[Shape], batch, max_new, flops) -> RulePlan:
    g = config["generation"]
    tp = int(g.get("tensor_parallel_size", 1) or 1)
    util = float(g.get("gpu_memory_utilization", 0.9))
    seq = _seq_len(config, max_new)
    dtype = _dtype_bytes(g.get("dtype"))
    needs = [_engine(s, tp, batch, seq, dtype, plan) for s in shapes]
    need = max(needs, key=lambda t: sum(t.values()))
    rp = RulePlan(rule, gpus, jobs, _hours(flops, plan, "generate"), generate=need)
    budget = util * plan["gpu_memory_gib"] * GIB if plan["gpu_memory_gib"] else None
    if g.get("backend") == "vllm" and budget is not None and sum(need.values()) > budget:
        rp.problems.append(
            f"rule {rule}: the vLLM engine needs {rp.generate_gib:.1f} GiB per GPU ({rp.terms('generate')}) but "
            f"generation.gpu_memory_utilization {util} of {plan['gpu_memory_gib']} GiB gives it {budget / GIB:.1f}; "
            f"lower generation.batch_size or generation.max_model_len, or raise the utilisation or the GPUs")
    return rp


def _trainer(config, plan, stage: str, gpus: int, student: Shape, teacher: Shape, seq: int, optimizers,
             update_norm: bool) -> tuple[dict, dict]:
    """(terms of the training peak, terms resident while the rollout engine generates), bytes per GPU."""
    s = config[stage]
    n, b, c = max(gpus, 1), int(s["micro_batch"]), int(s["loss_chunk"])  # no GPUs: one process
    act = _dtype_bytes(config["training"].get("dtype"))
    opt = max(8 if o == "adamw" else 4 for o in optimizers)
    with_teacher = float(s["kd_ratio"]) > 0
    Ps, Pt = student.params, teacher.params if with_teacher else 0
    tokens = b * seq
    resident = {"fp32 master weights": 4 * Ps / n, "optimizer states": opt * Ps / n,
                "teacher (sharded)": act * Pt / n, "process overhead": plan["overhead_gib"] * GIB}
    train = dict(resident)
    train["fp32 gradients"] = 4 * Ps / n
    if update_norm:
        train["update-norm copy"] = 4 * Ps / n
    big = max(student.layer_params(), teacher.layer_params() if with_teacher else 0)
    train["unsharded params"] = 2 * (student.root_params + (teacher.root_params if with_teacher else 0) + 2 * big)
    train["unsharded grads"] = 2 * 2 * student.layer_params()
    train["checkpointed activations"] = student.layers * tokens * student.hidden * act
    train["recomputed layer"] = 2 * tokens * student.act_bytes_per_token()
    train["teacher forward"] = tokens * teacher.act_bytes_per_token() if with_teacher else 0
    train["attention masks"] = 2 * b * seq * seq * 2
    V, Hs, Ht = student.vocab, student.hidden, teacher.hidden
    train["head + loss"] = (4 * V * Hs + 4 * V * Hs + 2 * V * Hs + (4 * V * Ht if with_teacher else 0)
                            + tokens * (6 * Hs + 2 * Ht) + HEAD_BUFFERS * min(c, tokens) * V * 4)
    return train, resident


def _training_rule(config, plan, rule, gpus, jobs, student, teacher, *, stage, seq, optimizers, update_norm,
                   rollouts, flops_train, flops_gen) -> RulePlan:
    train, resident = _trainer(config, plan, stage, gpus, student, teacher, seq, optimizers, update_norm)
    rp = RulePlan(rule, gpus, jobs, _hours(flops_train, plan, "train") + _hours(flops_gen, plan, "generate"),
                  train=train)
    mem = plan["gpu_memory_gib"]
    if rollouts:
        s2 = config["stage2"]
        if s2.get("rollout_backend", "hf") == "vllm":
            e = rollout_engine(config)
            tp = int(e["tensor_parallel_size"])
            if gpus % tp:
                rp.problems.append(f"rule {rule}: stage2.rollout_engine.tensor_parallel_size {tp} does not divide "
                                   f"resources.{GPU_RULES[rule]}.gpus {gpus} (one engine per {tp} training ranks)")
            need = _engine(student, tp, int(e["batch_size"]), seq, _dtype_bytes(config["generation"].get("dtype")),
                           plan)
            share = float(e["gpu_memory_utilization"]) * mem * GIB if mem else sum(need.values())
            rp.generate = {**resident, "vLLM engine share": share}
            rp.train["sleeping engine" if e["sleep"] else "vLLM engine share"] = (
                plan["vllm_overhead_gib"] * GIB if e["sleep"] else share)
            if mem and sum(need.values()) > share:
                rp.problems.append(
                    f"rule {rule}: the rollout engine needs {sum(need.values()) / GIB:.1f} GiB per GPU "
                    f"({', '.join(f'{k} {v / GIB:.1f}' for k, v in need.items())}) but "
                    f"stage2.rollout_engine.gpu_memory_utilization {e['gpu_memory_utilization']} of {mem} GiB gives it "
                    f"{share / GIB:.1f}; lower rollout_engine.batch_size or raise its gpu_memory_utilization")
        else:  # HF generate on the FSDP student: each rank its share of a step's rollouts, KV cache in bf16
            per_rank = math.ceil(s2["prompts_per_step"] * s2["rollouts_per_prompt"] / max(gpus, 1))
            batch = min(per_rank, int(config["generation"]["batch_size"]))
            rp.generate = {**resident, "unsharded params": rp.train["unsharded params"],
                           f"KV {batch}x{seq}": batch * seq * student.kv_bytes_per_token(2)}
    if mem:
        for phase, gib in (("training", rp.train_gib), ("generation", rp.generate_gib)):
            if gib is not None and gib > mem:
                terms = rp.terms("train" if phase == "training" else "generate")
                rp.problems.append(f"rule {rule}: its {phase} peak needs {gib:.1f} GiB per GPU ({terms}) but "
                                   f"a GPU has {mem} GiB; give it more GPUs (resources.{GPU_RULES[rule]}.gpus) "
                                   f"or lower its micro_batch, loss_chunk or sequence length")
    return rp


def _scoring_rule(config, plan, rule, gpus, student, teacher, n_students, tokens_flops, buffers) -> RulePlan:
    """Whole models on the rule's GPUs, largest first onto the least-loaded GPU; the worst GPU's bytes."""
    t = config["tokens"]
    dtype = _dtype_bytes(config["training"].get("dtype"))
    loads = [0.0] * max(gpus, 1)
    hosts = [set() for _ in loads]
    for name, P in sorted([("teacher", teacher.params)] + [("student", student.params)] * n_students,
                          key=lambda x: -x[1]):
        i = min(range(len(loads)), key=loads.__getitem__)
        loads[i] += dtype * P
        hosts[i].add(name)
    i = max(range(len(loads)), key=loads.__getitem__)
    seq = int(config["stage2"]["prompt_max_len"]) + int(t["max_new_tokens"])
    tokens = int(t["batch_size"]) * seq
    shape = teacher if "teacher" in hosts[i] else student
    terms = {"weights": loads[i], "teacher output layer copy": 0 if "teacher" in hosts[i] else
             dtype * teacher.vocab * teacher.hidden, "workspace": buffers,
             "activations": tokens * (shape.act_bytes_per_token() + 2 * shape.hidden),
             "process overhead": plan["overhead_gib"] * GIB}
    rp = RulePlan(rule, gpus, 1, _hours(tokens_flops, plan, "train"), train=terms)
    if plan["gpu_memory_gib"] and rp.train_gib > plan["gpu_memory_gib"]:
        rp.problems.append(f"rule {rule}: its busiest GPU needs {rp.train_gib:.1f} GiB ({rp.terms('train')}) but a "
                           f"GPU has {plan['gpu_memory_gib']} GiB; give it more GPUs "
                           f"(resources.{GPU_RULES[rule]}.gpus)")
    return rp


def gpu_plan(config: Mapping, rules: Sequence[str] | None = None) -> Plan:
    """The plan of ``rules`` (default: every GPU rule that asks for GPUs), with the problems each one has."""
    from rocktokens.workflow.config import eval_checkpoints, scorer_checkpoints
    from rocktokens.freeze.arms import arm_specs
    from rocktokens.knockout.experiment import check_policies, n_shards

    plan = plan_settings(config)
    if rules is None:
        rules = [r for r in GPU_RULES if rule_gpus(config, r)]
    if not rules:
        return Plan(plan["gpu_memory_gib"], [], plan)
    S, T = model_shape(config, "student_base"), model_shape(config, "teacher")
    gen = config["generation"]
    s1, s2, ev, tk, ko, fz = (config[k] for k in ("stage1", "stage2", "evaluate", "tokens", "knockout", "freeze"))
    frac = plan["mean_length_fraction"]
    arms = arm_specs(config["arms"])
    out = []
    for rule in rules:
        gpus = rule_gpus(config, rule)
        if rule == "teacher_samples":
            ts = config["teacher_samples"]
            n = _n_prompts(config, "stage1_prompts")
            rp = _generation_rule(config, plan, rule, gpus, int(ts.get("shards", 1)), [T], int(gen["batch_size"]),
                                  ts["max_new_tokens"], n * T.forward_flops(_mean_len(plan, ts["max_new_tokens"])))
        elif rule == "stage1_kd":
            n = _n_prompts(config, "stage1_prompts") * float(s1["epochs"])
            L = _mean_len(plan, config["teacher_samples"]["max_new_tokens"], s1.get("max_len"))
            seq = int(s1.get("max_len") or _seq_len(config, config["teacher_samples"]["max_new_tokens"]))
            rp = _training_rule(config, plan, rule, gpus, 1, S, T, stage="stage1", seq=seq,
                                optimizers=[s1.get("optimizer", "adamw")], update_norm=False, rollouts=False,
                                flops_train=n * (4 * S.forward_flops(L) + T.forward_flops(L)), flops_gen=0)
        elif rule in ("stage2_opd", "opd_arm"):
            seq = int(s2["prompt_max_len"]) + int(s2["max_new_tokens"])
            L = _mean_len(plan, s2["max_new_tokens"])
            per_step = s2["prompts_per_step"] * s2["rollouts_per_prompt"]
            epoch_steps = (_n_prompts(config, "stage2_prompts") // s2["prompts_per_step"]) * float(s2["epochs"])
            if rule == "stage2_opd":
                jobs, steps, opts, norm = 1, epoch_steps, [s2.get("optimizer", "adamw")], False
            else:
                arm_steps = fz.get("steps") or epoch_steps
                extra = fz["lr_match"]["steps"] * fz["lr_match"]["iterations"]
                jobs, opts, norm = len(arms), [a.optimizer for a in arms.values()], bool(fz.get("update_norm"))
                steps = sum(arm_steps + (extra if a.lr_match else 0) for a in arms.values())
            n = steps * per_step
            rp = _training_rule(config, plan, rule, gpus, jobs, S, T, stage="stage2", seq=seq, optimizers=opts,
                                update_norm=norm, rollouts=True, flops_gen=n * S.forward_flops(L),
                                flops_train=n * (4 * S.forward_flops(L) + T.forward_flops(L)))
        elif rule == "evaluate":
            ckpts, benches = eval_checkpoints(config), ev["benchmarks"]
            L = _mean_len(plan, ev["max_new_tokens"])
            flops = sum(_n_problems(config, plan, b) * ev["k"] * (T if c == "teacher" else S).forward_flops(L)
                        for c in ckpts for b in benches)
            models = [T, S] if "teacher" in ckpts else [S]
            rp = _generation_rule(config, plan, rule, gpus, len(ckpts) * len(benches), models,
                                  int(gen["batch_size"]), ev["max_new_tokens"], flops)
        elif rule in ("evaluate_arm", "evaluate_arm_start"):
            benches = fz["eval"]["benchmarks"]
            points = len(arms) * fz["n_checkpoints"] if rule == "evaluate_arm" else 1
            L = _mean_len(plan, ev["max_new_tokens"])
            flops = points * sum(_n_problems(config, plan, b) * fz["eval"]["k"] for b in benches) * S.forward_flops(L)
            rp = _generation_rule(config, plan, rule, gpus, points * len(benches), [S], int(gen["batch_size"]),
                                  ev["max_new_tokens"], flops)
        elif rule == "knockout_shard":
            policies = check_policies(ko.get("policies"))
            per_bench = n_shards(ko["k_screen"], ko["shard_size"], policies) + 1
            arms_total = len(policies) * ko["k_screen"] + 1
            L = _mean_len(plan, ko["max_new_tokens"])
            flops = sum(arms_total * min(ko["n_problems"] or math.inf, _n_problems(config, plan, b)) * ko["samples"]
                        for b in ko["benchmarks"]) * S.forward_flops(L)
            rp = _generation_rule(config, plan, rule, gpus, per_bench * len(ko["benchmarks"]), [S],
                                  int(ko.get("batch_size") or gen["batch_size"]), ko["max_new_tokens"], flops)
        elif rule == "rollouts":
            L = _mean_len(plan, tk["max_new_tokens"])
            rp = _generation_rule(config, plan, rule, gpus, 1, [S], int(gen["batch_size"]), tk["max_new_tokens"],
                                  tk["n_problems"] * tk["samples_per_problem"] * S.forward_flops(L))
        else:  # teacher-forced scoring
            n_traj = tk["n_problems"] * tk["samples_per_problem"]
            L = _mean_len(plan, tk["max_new_tokens"])
            chunk, V = int(tk["chunk"]), S.vocab
            if rule == "token_kl":
                k, trajs = len(scorer_checkpoints(config)), n_traj
                cols = V if tk.get("compiled") else min(int(tk.get("vocab_block", 4096)), V)
                buffers = (2 if tk.get("compiled") else 3) * chunk * cols * 4
            else:
                k = 1 if rule == "gradient_geometry" else 2
                trajs = n_traj * (1 - config["geometry"]["selection_fraction"])
                buffers = (GEOMETRY_BUFFERS * chunk * V * 4 + 3 * max(config["rocks"]["Ks"]) * V * 8
                           if rule == "gradient_geometry" else 3 * chunk * min(int(tk.get("vocab_block", 4096)), V) * 4)
            rp = _scoring_rule(config, plan, rule, gpus, S, T, k,
                               trajs * (T.forward_flops(L) + k * S.forward_flops(L)), buffers)
        table = config["resources"]
        rp.runtime_min = int(table.get(GPU_RULES[rule], table["default"]).get("runtime", 0))
        out.append(rp)
    return Plan(plan["gpu_memory_gib"], out, plan)


def check_gpu_plan(config: Mapping) -> Plan | None:
    """Refuse (one :class:`GpuPlanError` naming each rule and its numbers) a GPU rule that does not fit its GPUs.

    Nothing is checked when no rule asks for GPUs (the embedded default); memory is not checked when the GPU's is
    unknown (``cluster.gpu_model`` not in :data:`GPU_MEMORY_GIB` and no ``plan.gpu_memory_gib``)."""
    if not any(rule_gpus(config, r) for r in GPU_RULES):
        return None
    plan = gpu_plan(config)
    problems = [p for r in plan.rules for p in r.problems]
    if problems:
        raise GpuPlanError("GPU memory plan (rocktokens/workflow/gpu_plan.py; `make plan-paper` prints it): "
                           + "; ".join(problems))
    return plan


# ----------------------------------------------------------------------------------------------- printing
def format_plan(plan: Plan) -> str:
    def gib(x):
        return "-" if x is None else f"{x:.1f}"

    s = plan.settings
    lines = [f"GPU plan (GiB per GPU; one GPU: {gib(plan.gpu_memory_gib)} GiB; {s['peak_tflops']:g} TFLOP/s at MFU "
             f"train {s['mfu']['train']} / generate {s['mfu']['generate']}; responses {s['mean_length_fraction']} x "
             f"max_new_tokens, prompts {s['prompt_tokens']} tokens)",
             f"{'rule':<20}{'GPUs':>5}{'jobs':>6}{'train':>8}{'generate':>10}{'GPU':>7}{'h/job':>8}{'runtime h':>10}"
             f"{'GPU-h':>10}"]
    for r in plan.rules:
        wall = r.gpu_hours / r.jobs / max(r.gpus, 1)
        flag = "" if not r.problems else "  DOES NOT FIT"
        lines.append(f"{r.rule:<20}{r.gpus:>5}{r.jobs:>6}{gib(r.train_gib):>8}{gib(r.generate_gib):>10}"
                     f"{gib(plan.gpu_memory_gib):>7}{wall:>8.1f}{r.runtime_min / 60:>10.1f}{r.gpu_hours:>10,.1f}{flag}")
    node = max(r.gpus for r in plan.rules)
    lines.append(f"{'total':<20}{'':>5}{sum(r.jobs for r in plan.rules):>6}{'':>51}{plan.gpu_hours:>10,.0f}"
                 f"  (= {plan.gpu_hours / 24 / node:,.1f} days of one {node}-GPU node)")
    for p in (p for r in plan.rules for p in r.problems):
        lines.append("! " + p)
    return "\n".join(lines)


def load_config(configfiles: Sequence[str | Path], base: str | Path | None = None) -> dict:
    """The embedded ``config.yaml`` with each ``--configfile`` merged on top and validated (defaults filled in),
    as Snakemake does."""
    import yaml
    from snakemake.utils import update_config, validate

    repo = Path(__file__).resolve().parents[2]
    config = yaml.safe_load(Path(base or repo / "config.yaml").read_text())
    for f in configfiles:
        update_config(config, yaml.safe_load(Path(f).read_text()) or {})
    validate(config, str(repo / "schemas" / "config.schema.yaml"))
    return config


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Print the GPU memory and time plan of a config (rocktokens.workflow.gpu_plan).")
    ap.add_argument("--configfile", nargs="*", default=[], help="merged onto config.yaml, as snakemake does")
    args = ap.parse_args(argv)
    config = load_config(args.configfile)
    plan = gpu_plan(config)
    if not plan.rules:
        print("no rule asks for GPUs: nothing to plan")
        return 0
    print(format_plan(plan))
    return 1 if any(r.problems for r in plan.rules) else 0


if __name__ == "__main__":
    raise SystemExit(main())
