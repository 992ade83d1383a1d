# pass@1 of any checkpoint on any benchmark (k samples per problem), and the accuracy table.


# Per-problem correctness of one checkpoint on one benchmark (math answers via math-verify; OOD by its rule).
# One job per (checkpoint, benchmark): each is its own target and its own GPU job at paper scale (a failed
# benchmark reruns alone); seeds depend on (benchmark, problem, sample) only, so the split changes no sample.
rule evaluate:
    input:
        unpack(lambda w: nltk_input(w.bench)),
        model=lambda w: ckpt_dir(w.ckpt),
        tokenizer=tokenizer_dir(),
        bench=f"{R}/data/{{bench}}.parquet",
    output:
        f"{R}/eval/{{ckpt}}/{{bench}}.parquet",
    params:
        eval=pick("evaluate", "k", *SAMPLING),
        generation=config["generation"],
        seed=config["seed"],
        name=lambda w: w.ckpt,
    log:
        f"{R}/logs/evaluate/{{ckpt}}/{{bench}}.log",
    benchmark:
        f"{R}/benchmarks/evaluate/{{ckpt}}/{{bench}}.tsv"
    wildcard_constraints:
        bench="|".join(config["evaluate"]["benchmarks"]),
    threads: config["threads"]
    resources:
        **res("evaluate"),
    conda:
        GPU_ENV
    script:
        "../workflow_scripts/evaluate.py"


# pass@1 per checkpoint × benchmark (mean over k samples), plus the paper's AIME24/25/HMMT25 average.
rule accuracy_table:
    input:
        eval_targets(),
    output:
        tsv=report(f"{R}/eval/accuracy.tsv", caption="../report/accuracy.rst", category="Distillation"),
        parquet=f"{R}/eval/accuracy.parquet",
    params:
        hard=config["evaluate"]["hard_average"],
    log:
        f"{R}/logs/accuracy_table.log",
    benchmark:
        f"{R}/benchmarks/accuracy_table.tsv"
    conda:
        CPU_ENV
    script:
        "../workflow_scripts/accuracy_table.py"


# Does the distillation under study work? pass@1 of every checkpoint on the in-distribution benchmark with paired
# gains (base → stage 1 → final OPD, bootstrap over problems), the share of the teacher–student gap closed, and the
# OPD reverse-KL curve (rocktokens/evaluate/distillation.py).
rule distillation:
    input:
        evals=expand(f"{R}/eval/{{ckpt}}/{{bench}}.parquet", bench=config["distillation"]["benchmark"],
                     ckpt=[c for c in ["teacher", "student_base", "stage1", *OPD_CKPTS] if c in ALL_CKPTS]),
        # trained here: the OPD curve (source checkpoints: trained elsewhere, no history)
        **({} if BYO else {"history": rules.stage2_opd.output.history}),
    output:
        checkpoints=report(f"{R}/eval/distillation_checkpoints.tsv", caption="../report/distillation.rst",
                           category="Distillation"),
        gains=report(f"{R}/eval/distillation_gains.tsv", caption="../report/distillation.rst", category="Distillation"),
        summary=f"{R}/eval/distillation.json",
        figure=report(f"{R}/figures/distillation.png", caption="../report/distillation.rst", category="Distillation"),
    params:
        dpi=config["figures"]["dpi"],
        benchmark=config["distillation"]["benchmark"],
        n_resamples=config["distillation"]["bootstrap_resamples"],
        seed=config["seed"],
    log:
        f"{R}/logs/distillation.log",
    benchmark:
        f"{R}/benchmarks/distillation.tsv"
    conda:
        CPU_ENV
    script:
        "../workflow_scripts/distillation.py"
