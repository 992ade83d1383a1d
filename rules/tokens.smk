# Trajectories on the analysis benchmark and the per-token KL table (§2, Eq. 2 and 15).


# A checkpoint's trajectories on the analysis benchmark (N problems × samples, sampling from config).
rule rollouts:
    input:
        model=lambda w: ckpt_dir(w.ckpt),
        tokenizer=tokenizer_dir(),
        bench=f"{R}/data/{config['tokens']['benchmark']}.parquet",
    output:
        f"{R}/tokens/rollouts/{{ckpt}}.parquet",
    params:
        cfg=pick("tokens", "benchmark", "n_problems", "samples_per_problem", *SAMPLING),
        generation=config["generation"],
        seed=config["seed"],
    priority: CRITICAL_PATH
    log:
        f"{R}/logs/rollouts/{{ckpt}}.log",
    benchmark:
        f"{R}/benchmarks/rollouts/{{ckpt}}.tsv"
    threads: config["threads"]
    resources:
        **res("rollouts"),
    conda:
        GPU_ENV
    script:
        "../workflow_scripts/rollouts.py"


# The post-OPD trajectories teacher-forced under every scorer (pre-OPD, each OPD checkpoint) and the teacher:
# one row per response token and scorer (log-probs, ℓ_t, full-vocabulary reverse/forward KL, entropies).
rule token_kl:
    input:
        rollouts=f"{R}/tokens/rollouts/{POST_OPD}.parquet",
        teacher=model_dir("teacher"),
        tokenizer=tokenizer_dir(),
        **{s: ckpt_dir(s) for s in SCORERS},
    output:
        directory(f"{R}/tokens/kl"),
    params:
        cfg=SCORING,
        scorers=SCORERS,
        dtype=config["training"].get("dtype", "float32"),
    priority: CRITICAL_PATH
    log:
        f"{R}/logs/token_kl.log",
    benchmark:
        f"{R}/benchmarks/token_kl.tsv"
    threads: config["threads"]
    resources:
        **res("token_kl"),
    conda:
        GPU_ENV
    script:
        "../workflow_scripts/token_kl.py"
