# The two distillation stages of the paper (§5, Appendix C) — the same rules at both scales.


TS_PARTS = [f"p{i:03d}" for i in range(config["teacher_samples"]["shards"])]


# The teacher answers the stage-1 prompts (T=0.6, top_p=0.95 in the paper) → off-policy KD data. The prompts are
# cut into teacher_samples.shards contiguous blocks, each its own job (at paper scale 20 jobs of 1,000 prompts:
# a failed or timed-out block reruns alone); per-prompt seeds make the samples independent of the cut.
rule teacher_samples:
    input:
        model=model_dir("teacher"),
        tokenizer=tokenizer_dir(),
        prompts=f"{R}/data/stage1_prompts.parquet",
    output:
        f"{R}/distill/teacher_samples/{{part}}.parquet",
    params:
        sampling=pick("teacher_samples", *SAMPLING, "shards"),
        generation=config["generation"],
        seed=config["seed"],
        part=lambda w: TS_PARTS.index(w.part),
    priority: CRITICAL_PATH
    log:
        f"{R}/logs/teacher_samples/{{part}}.log",
    benchmark:
        f"{R}/benchmarks/teacher_samples/{{part}}.tsv"
    wildcard_constraints:
        part="|".join(TS_PARTS),
    threads: config["threads"]
    resources:
        **res("teacher_samples"),
    conda:
        GPU_ENV
    script:
        "../workflow_scripts/teacher_samples.py"


# The blocks in prompt order, every prompt answered once: the stage-1 KD data.
rule teacher_samples_merge:
    input:
        parts=expand(f"{R}/distill/teacher_samples/{{part}}.parquet", part=TS_PARTS),
        prompts=f"{R}/data/stage1_prompts.parquet",
    output:
        f"{R}/distill/teacher_samples.parquet",
    priority: CRITICAL_PATH
    log:
        f"{R}/logs/teacher_samples_merge.log",
    conda:
        CPU_ENV
    script:
        "../workflow_scripts/teacher_samples_merge.py"


# Stage 1: off-policy KD of the student base on the teacher samples (forward KL + CE, kd_ratio 0.5).
rule stage1_kd:
    input:
        student=model_dir("student_base"),
        teacher=model_dir("teacher"),
        tokenizer=tokenizer_dir(),
        samples=rules.teacher_samples_merge.output[0],
    output:
        model=directory(f"{R}/checkpoints/stage1"),
    params:
        spec=json.dumps({"stage1": config["stage1"], "seed": config["seed"], "threads": config["threads"],
                         "dtype": config["training"].get("dtype", "float32")}),
        state=f"{R}/train_state/stage1",
    priority: CRITICAL_PATH
    log:
        f"{R}/logs/stage1_kd.log",
    benchmark:
        f"{R}/benchmarks/stage1_kd.tsv"
    threads: config["threads"]
    resources:
        **res("stage1_kd"),
    conda:
        GPU_ENV
    shell:
        train_shell("stage1 --spec {params.spec:q}"
                    " --input student={input.student:q} teacher={input.teacher:q} tokenizer={input.tokenizer:q}"
                    " samples={input.samples:q} --output model={output.model:q} --state {params.state:q} --log {log:q}")


# Stage 2: on-policy distillation from the stage-1 checkpoint — pure full-vocabulary reverse KL (Eq. 1)
# on the student's own rollouts; C checkpoints, each its own target.
rule stage2_opd:
    input:
        student=rules.stage1_kd.output[0],
        teacher=model_dir("teacher"),
        tokenizer=tokenizer_dir(),
        prompts=f"{R}/data/stage2_prompts.parquet",
    output:
        **{c: directory(f"{R}/checkpoints/{c}") for c in OPD_CKPTS},
        history=f"{R}/distill/stage2_history.parquet",
    params:
        spec=json.dumps({"stage2": config["stage2"], "seed": config["seed"], "threads": config["threads"],
                         "generation": config["generation"], "dtype": config["training"].get("dtype", "float32")}),
        state=f"{R}/train_state/stage2",
        outputs=lambda w, output: " ".join(f"{c}={output[c]}" for c in OPD_CKPTS),
    priority: CRITICAL_PATH
    log:
        f"{R}/logs/stage2_opd.log",
    benchmark:
        f"{R}/benchmarks/stage2_opd.tsv"
    threads: config["threads"]
    resources:
        **res("stage2_opd"),
    conda:
        GPU_ENV
    shell:
        train_shell("stage2 --spec {params.spec:q}"
                    " --input student={input.student:q} teacher={input.teacher:q} tokenizer={input.tokenizer:q}"
                    " prompts={input.prompts:q} --output {params.outputs} history={output.history:q}"
                    " --state {params.state:q} --log {log:q}")
