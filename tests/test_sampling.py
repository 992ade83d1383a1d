"""Teacher samples / evaluation on a tiny model, and the accuracy table on hand-made outputs."""
import pandas as pd
import pytest

from rocktokens.generation.sampling import accuracy_table, evaluate, merge_blocks, open_backend, prompt_block, teacher_samples


def test_accuracy_table_on_hand_made_outputs():
    ev = pd.DataFrame({
        "checkpoint": ["a"] * 6 + ["b"] * 2,
        "benchmark": ["math", "math", "math", "math", "aime24", "aime25", "math", "math"],
        "id": ["p1", "p1", "p2", "p2", "q1", "r1", "p1", "p2"],
        "sample": [0, 1, 0, 1, 0, 0, 0, 0],
        "correct": [True, False, True, True, True, False, False, False],
    })
    t = accuracy_table([ev], hard=["aime24", "aime25"]).set_index(["checkpoint", "benchmark"])
    assert t.loc[("a", "math"), "pass@1"] == pytest.approx(0.75)  # (0.5 + 1.0) / 2
    assert t.loc[("a", "math"), "n_problems"] == 2
    assert t.loc[("a", "hard_avg"), "pass@1"] == pytest.approx(0.5)  # pooled problems q1, r1
    assert t.loc[("b", "math"), "pass@1"] == 0.0


def test_evaluate_and_teacher_samples_on_tiny_model(tiny_world, tiny_models):
    tok = tiny_models["tokenizer"]
    gen = {"backend": "hf", "batch_size": 8, "dtype": "float32"}
    backend = open_backend(tiny_models["teacher"], tok, gen, seed=0)
    bench = tiny_world["world"]["bench_math"].iloc[:4]
    cfg = {"k": 2, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 8}
    ev = evaluate(backend, tok, bench, cfg, 0, "teacher", "math")
    assert len(ev) == 8 and set(ev["sample"]) == {0, 1}
    assert not ev["correct"].any()  # an untrained model does not solve arithmetic
    again = evaluate(backend, tok, bench, cfg, 0, "teacher", "math")
    pd.testing.assert_frame_equal(ev, again)  # seeds per problem: reproducible
    prompts = tiny_world["world"]["stage1_prompts"].iloc[:5]
    ts_cfg = {"temperature": 0.6, "top_p": 0.95, "max_new_tokens": 6, "shards": 2}
    ts = teacher_samples(backend, tok, prompts, ts_cfg, 0)
    assert len(ts) == 5 and (ts["n_tokens"] <= 6).all()
    # the paper's 20k prompts are sampled in blocks (one job each): per-prompt seeds, so blocks merge to the same
    blocks = [teacher_samples(backend, tok, prompt_block(prompts, i, 2), ts_cfg, 0) for i in (1, 0)]
    pd.testing.assert_frame_equal(merge_blocks(blocks, prompts), ts)
    with pytest.raises(ValueError, match="empty prompt set"):
        evaluate(backend, tok, bench.iloc[:0], cfg, 0, "teacher", "math")


def test_prompt_blocks_cover_every_prompt_once_and_merge_checks_it():
    prompts = pd.DataFrame({"id": [f"p{i}" for i in range(10)], "prompt": ["x"] * 10})
    blocks = [prompt_block(prompts, i, 3) for i in range(3)]
    assert [len(b) for b in blocks] == [3, 3, 4] and pd.concat(blocks)["id"].tolist() == prompts["id"].tolist()
    samples = [b.assign(response="r") for b in blocks]
    assert merge_blocks(samples[::-1], prompts)["id"].tolist() == prompts["id"].tolist()  # prompt order
    with pytest.raises(ValueError, match="1 missing"):
        merge_blocks(samples[:1] + [samples[1].iloc[1:]] + samples[2:], prompts)
    with pytest.raises(ValueError, match="1 duplicated"):
        merge_blocks([*samples, samples[0].iloc[:1]], prompts)
    with pytest.raises(ValueError, match="block 0 of 12 is empty"):
        prompt_block(prompts, 0, 12)
    with pytest.raises(ValueError, match="part 3 is not in"):
        prompt_block(prompts, 3, 3)


class ScriptedBackend:
    """A generation backend that answers each prompt with a fixed text: the real evaluation / knockout code runs on
    it (encoding, decoding, answer checking), only the model is replaced."""

    def __init__(self, tokenizer, answers: dict[str, str]):
        from rocktokens.core.prompts import encode_prompt

        self.tok, self.vocab_size = tokenizer, len(tokenizer)
        self.by_prompt = {tuple(encode_prompt(tokenizer, p)): text for p, text in answers.items()}

    def generate(self, reqs, params):
        from rocktokens.generation import GenerationResult

        out = []
        for q in reqs:
            ids = self.tok.encode(self.by_prompt[tuple(q.prompt_ids)], add_special_tokens=False)
            out.append(GenerationResult(token_ids=ids, logprobs=[0.0] * len(ids), finish_reason="stop"))
        return out


def test_evaluate_marks_correct_responses_correct(tiny_world):
    from rocktokens.models import load_tokenizer

    tok = load_tokenizer(tiny_world["qwen3"])
    bench = tiny_world["world"]["bench_math"].iloc[:3].reset_index(drop=True)
    a = [int(x) for x in bench["answer"]]
    replies = [f"Step 1. {a[0]} - 0 = {a[0]}.\nAnswer: {a[0]}",                     # the student's style
               f"So the answer is $\\boxed{{{a[1]}}}$.",                              # the teacher's style
               f"Answer: {a[2] + 1}"]                                                  # wrong
    backend = ScriptedBackend(tok, dict(zip(bench["prompt"], replies)))
    cfg = {"k": 2, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 64}
    ev = evaluate(backend, tok, bench, cfg, 0, "student", "math")
    assert ev.groupby("id", sort=False)["correct"].all().tolist() == [True, True, False]
    assert not ev["check_timeout"].any()
    t = accuracy_table([ev], hard=[]).set_index("benchmark")
    assert t.loc["math", "pass@1"] == pytest.approx(2 / 3) and t.loc["math", "n_check_timeouts"] == 0


def test_evaluate_counts_answer_checks_that_time_out(tiny_world, monkeypatch):
    from rocktokens.models import load_tokenizer

    monkeypatch.setenv("ROCKTOKENS_CHECK_TIMEOUT_S", "0.3")
    tok = load_tokenizer(tiny_world["qwen3"])
    bench = tiny_world["world"]["bench_math"].iloc[:2].reset_index(drop=True)
    replies = ["$\\boxed{\\binom{10^{9}}{10^{8}}}$", f"Answer: {bench['answer'].iloc[1]}"]
    backend = ScriptedBackend(tok, dict(zip(bench["prompt"], replies)))
    ev = evaluate(backend, tok, bench, {"k": 1, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 64}, 0, "s", "math")
    assert ev["check_timeout"].tolist() == [True, False] and ev["correct"].tolist() == [False, True]
    t = accuracy_table([ev, ev.assign(benchmark="aime24")], hard=["aime24"]).set_index("benchmark")
    assert t["n_check_timeouts"].to_dict() == {"math": 1, "aime24": 1, "hard_avg": 1}
    old = accuracy_table([ev.drop(columns="check_timeout")], hard=[])  # evaluations written before the column
    assert old["n_check_timeouts"].tolist() == [0]
