"""rocktokens: the library behind the Snakemake workflow of arXiv 2605.09253 (rock tokens in on-policy distillation).

Subpackages, in layers. A module imports only from its own subpackage or from one listed *before* it (earlier layer,
or an earlier stage in the study's data flow), and only public names (``tests/test_layout.py`` checks both):

layer 0  core          io, seeding, stats, losses (Eq. 1, 15–18), sequences/batches, prompts, plotting, formatting
layer 1  models        toy and pretrained causal LMs, checkpoints
         tokenizer     the Qwen3 tokenizer from tiktoken ranks, the compact embedded vocabulary
         checking      answer checking (math, IFEval)
         generation    HF / vLLM backends, OPD rollout engine, sampling + grading
         training      trainer and the offline / OPD loops
layer 2  the stages, one per ``rules/<stage>.smk``, in data-flow order:
         world → data → distill → evaluate → tokens → rocks → geometry → knockout → freeze → recovery → report
layer 3  workflow      what the rules read at parse time: config checks, cluster placement, GPU plan, byo runs
"""

#: The subpackages in import order (a module may import from its own or an earlier one).
LAYERS = ("core", "models", "tokenizer", "checking", "generation", "training", "world", "data", "distill", "evaluate",
          "tokens", "rocks", "geometry", "knockout", "freeze", "recovery", "report", "workflow")
