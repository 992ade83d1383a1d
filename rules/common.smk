# Config validation (schema, at parse time) and the small path helpers every rule shares.
import json
import shlex
import sys

from snakemake.utils import validate

from rocktokens.core.naming import opd_names
from rocktokens.workflow import byo
from rocktokens.workflow.config import check_config, eval_checkpoints, scorer_checkpoints


validate(config, "../schemas/config.schema.yaml")
byo.resolve(config)  # source: checkpoints -- settings that follow from the checkpoint list
check_config(config)
byo.check(config, byo.needed_datasets(config))

R = f"results/{config['run']}"
WORLD = config["source"] == "world"
BYO = config["source"] == "checkpoints"  # analyse checkpoints trained elsewhere: nothing is trained
FREEZE_ON = byo.freeze_on(config)  # the freeze arms need a trainer's stage-2 prompts
TRAIN = f"{workflow.basedir}/workflow_scripts/train.py"  # shell-launched (python or accelerate launch)
# Software environments (used with --software-deployment-method conda): CPU everywhere in the embedded
# world; GPU rules get the CUDA/vLLM env at paper scale.
CPU_ENV = f"{workflow.basedir}/envs/cpu.yaml"
GPU_ENV = CPU_ENV if WORLD else f"{workflow.basedir}/envs/gpu.yaml"
C = config["stage2"]["n_checkpoints"]
OPD_CKPTS = opd_names(C)
# every checkpoint of the run (source checkpoints: the student base only when it is given)
ALL_CKPTS = list(byo.checkpoint_dirs(config)) if BYO else ["teacher", "student_base", "stage1", *OPD_CKPTS]
DATASETS = ["stage1_prompts", "stage2_prompts", *config["benchmarks"]]
SCORERS = scorer_checkpoints(config)  # pre-OPD first
POST_OPD = OPD_CKPTS[-1]  # the final OPD checkpoint: its trajectories are the analysis corpus


def pick(section, *keys):
    """The settings ``keys`` of config ``section`` (those present): what one rule reads of a section, as its params,
    so that a setting the rule does not read never reruns it."""
    return {k: config[section][k] for k in keys if k in config[section]}


# Scheduling only (outputs never depend on it): the chain pretraining → teacher samples → stage 1 → stage 2 → token
# table → rock sets → knockout shards goes first whenever a job of it is ready, so that on few cores the many short
# arm and evaluation jobs fill the lanes around it instead of delaying it (the knockout shards are the longest jobs).
CRITICAL_PATH = 10
SAMPLING = ("temperature", "top_p", "max_new_tokens")  # what a sampling section holds for generation
# What the scoring rules read of `tokens` (rocktokens.tokens.kl.scoring_options) and the aggregation rules of `rocks`.
SCORING = pick("tokens", "chunk", "batch_size", "vocab_block", "compiled")
AGGREGATION = pick("rocks", "loss", "duckdb")


def model_dir(role):
    """The HF directory of a base model: trained in the DAG (world), staged from the hub (paper), or given
    (source checkpoints)."""
    if BYO:  # a role the run does not give (no student base) is only named by rules that are never planned
        return byo.checkpoint_dirs(config).get(role, f"{R}/models/{role}")
    return f"{R}/models/{role}" if WORLD else f"resources/models/{role}"


def tokenizer_dir():
    """World: the compact Qwen3 tokenizer built in the DAG; paper: the student's own tokenizer; source checkpoints:
    the pre-OPD student's."""
    if BYO:
        return config["checkpoints"]["pre_opd"]
    return f"{R}/tokenizer/compact" if WORLD else model_dir("student_base")


def ckpt_dir(name):
    if BYO:
        return byo.checkpoint_dirs(config)[name]
    if name in ("teacher", "student_base"):
        return model_dir(name)
    return f"{R}/checkpoints/{name}"


def eval_targets():
    return expand(
        f"{R}/eval/{{ckpt}}/{{bench}}.parquet",
        ckpt=eval_checkpoints(config),
        bench=config["evaluate"]["benchmarks"],
    )


def launcher():
    """How training scripts start: plain python on CPU, `accelerate launch` across a node's GPUs.

    A bare `python` means the interpreter running Snakemake (the workflow's environment).
    """
    cmd = config["training"]["launcher"]
    return sys.executable + cmd[len("python"):] if cmd.split()[0] == "python" else cmd


# The training rules' command prefix, joined to their shell templates at parse time (braces escaped for the
# formatting) and never passed as a param: it holds absolute paths (interpreter, checkout) and params are a rerun
# trigger, so a checkout or venv that moves must not relaunch finished training under the cluster profile's triggers
# (mtime, params, input; tests/test_pipeline.py). The default profile's `code` trigger does see the shell text.
TRAIN_CMD = f"{launcher()} {shlex.quote(TRAIN)}".replace("{", "{{").replace("}", "}}")


def train_shell(args):
    """The shell template of a training rule: TRAIN_CMD, then the stage and its arguments (a template)."""
    return f"{TRAIN_CMD} {args}"


def nltk_input(bench):
    """Extra input of a job that scores ``bench``: the staged NLTK data when it is a hub IFEval benchmark."""
    if WORLD or config["datasets"][bench].get("checker") != "ifeval":
        return {}
    return {"nltk_data": "resources/nltk_data"}


def res(rule_name):
    """Per-rule resources from the config's resources section (``default`` if the rule is not listed), in the
    names the SLURM executor reads; memory and runtime grow on retries (rocktokens.workflow.cluster.rule_resources)."""
    from rocktokens.workflow.cluster import rule_resources

    return rule_resources(config, rule_name)


def dataset_spec(w):
    """The adapter prepare_data applies: ``datasets.<name>``; none for the stage-2 prompt file of source checkpoints
    (already in the workflow's schema)."""
    if BYO and w.dataset == "stage2_prompts" and config["checkpoints"].get("stage2_prompts"):
        return {}
    return config.get("datasets", {}).get(w.dataset, {})


def data_source(w):
    """Raw input of prepare_data: a world split, a staged hub dataset, or a local file (source checkpoints)."""
    if BYO and byo.dataset_file(config, w.dataset):
        return byo.dataset_file(config, w.dataset)
    if WORLD:
        split = w.dataset if w.dataset.endswith("_prompts") else f"bench_{w.dataset}"
        return f"{R}/world/{split}.parquet"
    return f"resources/datasets/{w.dataset}.parquet"
