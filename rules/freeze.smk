# Rock-freeze training (§4, Eq. 18–19, Figure 5) and the optimizer ablation: reweighted OPD arms from the
# stage-1 checkpoint, their pass@1 curves on the hard benchmarks, the masked share per arm (rocktokens/freeze/arms.py).
import re
import shlex

from rocktokens.freeze.arms import arm_freeze_settings, arm_inputs, check_freeze_config, frozen_set, probe_settings

ARMS = check_freeze_config(config)  # name -> ArmSpec; fails at parse time naming the bad key
FZ = config["freeze"]
FROZEN_SET = frozen_set(FZ["K"], rules.rock_set_R.output, rules.rock_set.output)  # R, or freeze.K's own set
ARM_CKPTS = opd_names(FZ["n_checkpoints"])
ARM_EVAL = {**pick("evaluate", *SAMPLING), "k": FZ["eval"]["k"]}  # what evaluate_arm reads


wildcard_constraints:
    arm="|".join(re.escape(a) for a in ARMS),
    point="|".join(ARM_CKPTS),


# One arm: a full OPD run from the stage-1 checkpoint with the arm's weights (λ on R ∪ W_R, on R only, or on matched
# random windows), optimizer and probe; same prompts, order and rollout seeds in every arm; resumable from its state.
rule opd_arm:
    input:
        unpack(lambda w: arm_inputs(ARMS[w.arm], FROZEN_SET, rules.rock_scores.output, R,
                                    rules.planted_tokens.output[0] if WORLD else None)),
        student=rules.stage1_kd.output.model,
        teacher=model_dir("teacher"),
        tokenizer=tokenizer_dir(),
        prompts=f"{R}/data/stage2_prompts.parquet",
    output:
        **{c: directory(f"{R}/arms/{{arm}}/{c}") for c in ARM_CKPTS},
        history=f"{R}/arms/{{arm}}/history.parquet",
        probe=f"{R}/arms/{{arm}}/probe.parquet",
        arm=f"{R}/arms/{{arm}}/arm.json",
    params:
        # stage 2's settings but its checkpoint count (the arms checkpoint at freeze.n_checkpoints)
        spec=lambda w: json.dumps({"stage2": {k: v for k, v in config["stage2"].items() if k != "n_checkpoints"},
                                   "freeze": arm_freeze_settings(ARMS[w.arm], FZ),
                                   "arm": ARMS[w.arm].to_dict(),
                                   "probe": probe_settings(ARMS[w.arm], config),
                                   "seed": config["seed"], "threads": config["threads"],
                                   "generation": config["generation"],
                                   "dtype": config["training"].get("dtype", "float32")}),
        state=lambda w: f"{R}/train_state/arms/{w.arm}",
        inputs=lambda w, input: " ".join(f"{k}={shlex.quote(str(v))}" for k, v in input.items()),
        outputs=lambda w, output: " ".join(f"{k}={shlex.quote(str(v))}" for k, v in output.items()),
    log:
        f"{R}/logs/arms/{{arm}}.log",
    benchmark:
        f"{R}/benchmarks/arms/{{arm}}.tsv"
    threads: config["threads"]
    resources:
        **res("opd_arm"),
    conda:
        GPU_ENV
    shell:
        train_shell("opd_arm --spec {params.spec:q} --input {params.inputs}"
                    " --output {params.outputs} --state {params.state:q} --log {log:q}")


# pass@1 samples (freeze.eval.k seeds per problem) of one arm checkpoint on one hard benchmark: rule evaluate
# (rules/evaluate.smk) on the arm's checkpoint, with the arm evaluation's k.
use rule evaluate as evaluate_arm with:
    input:
        unpack(lambda w: nltk_input(w.bench)),
        model=f"{R}/arms/{{arm}}/{{point}}",
        tokenizer=tokenizer_dir(),
        bench=f"{R}/data/{{bench}}.parquet",
    output:
        f"{R}/arms/{{arm}}/eval/{{point}}/{{bench}}.parquet",
    params:  # named params merge with rule evaluate's (generation, seed): only what differs
        eval=ARM_EVAL,
        name=lambda w: f"{w.arm}/{w.point}",
    log:
        f"{R}/logs/arms/evaluate/{{arm}}/{{point}}/{{bench}}.log",
    benchmark:
        f"{R}/benchmarks/arms/evaluate/{{arm}}/{{point}}/{{bench}}.tsv"
    wildcard_constraints:
        bench="|".join(FZ["eval"]["benchmarks"]),
    resources:
        **res("evaluate_arm"),


# The common start of every arm (step 0): the stage-1 checkpoint under the same evaluation settings.
use rule evaluate_arm as evaluate_arm_start with:
    input:
        unpack(lambda w: nltk_input(w.bench)),
        model=rules.stage1_kd.output.model,
        tokenizer=tokenizer_dir(),
        bench=f"{R}/data/{{bench}}.parquet",
    output:
        f"{R}/arms/stage1_eval/{{bench}}.parquet",
    params:
        name="stage1",
    log:
        f"{R}/logs/arms/evaluate/stage1/{{bench}}.log",
    benchmark:
        f"{R}/benchmarks/arms/evaluate/stage1/{{bench}}.tsv"


# pass@1 vs step per arm pooled over the hard benchmarks (95 % intervals over problems), and per arm the mean masked
# share, the lr it ran with and its update seconds per response token (the frozen work skipped, the probe untimed).
rule freeze_table:
    input:
        start=expand(f"{R}/arms/stage1_eval/{{bench}}.parquet", bench=FZ["eval"]["benchmarks"]),
        evals=expand(f"{R}/arms/{{arm}}/eval/{{point}}/{{bench}}.parquet", arm=list(ARMS), point=ARM_CKPTS,
                     bench=FZ["eval"]["benchmarks"]),
        arms=expand(f"{R}/arms/{{arm}}/arm.json", arm=list(ARMS)),
        histories=expand(f"{R}/arms/{{arm}}/history.parquet", arm=list(ARMS)),
    output:
        accuracy=report(f"{R}/freeze/accuracy.tsv", caption="../report/freeze_accuracy.rst", category="Rock freeze"),
        accuracy_parquet=f"{R}/freeze/accuracy.parquet",
        arms=report(f"{R}/freeze/arms.tsv", caption="../report/freeze_arms.rst", category="Rock freeze"),
    params:
        arms=list(ARMS),
        hard=FZ["eval"]["benchmarks"],
    log:
        f"{R}/logs/freeze_table.log",
    benchmark:
        f"{R}/benchmarks/freeze_table.tsv"
    conda:
        CPU_ENV
    script:
        "../workflow_scripts/freeze_table.py"


# Figure 5: accuracy vs step per arm with intervals; masked share per step and update speed-up per token per arm.
rule figure5:
    input:
        accuracy=rules.freeze_table.output.accuracy_parquet,
        arms=rules.freeze_table.output.arms,
        histories=expand(f"{R}/arms/{{arm}}/history.parquet", arm=list(ARMS)),
    output:
        report(f"{R}/figures/figure5.png", caption="../report/figure5.rst", category="Rock freeze"),
    params:
        dpi=config["figures"]["dpi"],
        arms=list(ARMS),
    log:
        f"{R}/logs/figure5.log",
    conda:
        CPU_ENV
    script:
        "../workflow_scripts/figure5.py"
