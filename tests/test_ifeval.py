"""The real IFEval checks (lm-eval's port of Google's code) behind the hub checker "ifeval:<json>", and the NLTK
punkt_tab staging they need offline."""
import json
import os
import subprocess
import sys

import pytest

from rocktokens.data.prepare import ifeval_checker
from rocktokens.checking.ifeval import IFEvalError, check_ifeval, follows, stage_nltk_data, use_nltk_data
from rocktokens.checking.checker import score

# a google/IFEval-like row: instruction ids and kwargs as the hub stores them (every kwarg key, null when unused)
ROW_IDS = ["punctuation:no_comma", "change_case:english_lowercase", "length_constraints:number_words",
           "detectable_format:number_bullet_lists", "startend:end_checker"]
NULLS = {"num_words": None, "relation": None, "num_bullets": None, "end_phrase": None}
ROW_KWARGS = [dict(NULLS), dict(NULLS), {**NULLS, "relation": "at least", "num_words": 12},
              {**NULLS, "num_bullets": 2}, {**NULLS, "end_phrase": "any other questions?"}]


def spec(ids, kwargs):
    return json.dumps({"instruction_id_list": ids, "kwargs": kwargs})


def test_each_instruction_is_checked_as_ifeval_does():
    good = "here are my two points\n* first point is short\n* second point is short too\nany other questions?"
    assert follows(good, spec(ROW_IDS, ROW_KWARGS)) == [True] * 5
    bad = "Here are my points, in order:\n* one\nAny other questions?"
    assert follows(bad, spec(ROW_IDS, ROW_KWARGS)) == [False, False, False, False, True]
    assert follows("", spec(ROW_IDS[:1], ROW_KWARGS[:1])) == [False]  # an empty response follows nothing


def test_hub_checker_string_scores_prompt_level_strict():
    checker = ifeval_checker(ROW_IDS, ROW_KWARGS)  # what prepare_data writes for a google/IFEval row
    good = "here are my two points\n* first point is short\n* second point is short too\nany other questions?"
    assert score(good, checker, "") is True
    assert score(good.replace("short too", "short, too"), checker, "") is False  # one instruction broken
    with pytest.raises(IFEvalError, match="unknown IFEval instruction"):
        check_ifeval("x", spec(["not:an_instruction"], [{}]))
    with pytest.raises(IFEvalError, match="bad IFEval checker spec"):
        check_ifeval("x", '{"instruction_id_list": ["punctuation:no_comma"]}')


def test_import_never_downloads_on_an_offline_node(tmp_path):
    """lm-eval downloads punkt_tab when its IFEval code is imported; ours must not try (compute nodes are offline)."""
    code = ("from rocktokens.checking.ifeval import check_ifeval, has_punkt\n"
            "import json\n"
            "print(check_ifeval('no commas here', json.dumps({'instruction_id_list': ['punctuation:no_comma'],"
            " 'kwargs': [{}]})), has_punkt())\n")
    env = {**os.environ, "NLTK_DATA": str(tmp_path / "empty")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[0] == "True"
    assert "nltk_data" not in proc.stdout + proc.stderr and "Error loading" not in proc.stdout + proc.stderr


def test_sentence_counts_need_staged_punkt_tab(tmp_path):
    """Without punkt_tab: one clear error naming the staging rule; with a staged folder: the real count."""
    code = ("import json, sys\n"
            "from rocktokens.checking.ifeval import IFEvalError, check_ifeval, use_nltk_data\n"
            "s = json.dumps({'instruction_id_list': ['length_constraints:number_sentences'],"
            " 'kwargs': [{'relation': 'less than', 'num_sentences': 3}]})\n"
            "try:\n    check_ifeval('One. Two.', s)\nexcept IFEvalError as e:\n    print('ERROR', e)\n"
            "d = sys.argv[1]\n"
            "use_nltk_data(d)\n"
            "import os\n"
            "from nltk.tokenize.punkt import PunktTrainer, save_punkt_params\n"
            "lang = os.path.join(d, 'tokenizers', 'punkt_tab', 'english')\n"
            "os.makedirs(lang, mode=0o700)\n"
            "t = PunktTrainer(); t.train('Dr. Smith went home. He was tired. Mr. Jones stayed. ' * 20, finalize=True)\n"
            "save_punkt_params(t.get_params(), lang)\n"
            "print('COUNT', check_ifeval('One sentence. Two sentences.', s), check_ifeval('One. Two. Three. Four.', s))\n")
    env = {**os.environ, "NLTK_DATA": str(tmp_path / "empty")}
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "nltk_data")], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    err = next(line for line in proc.stdout.splitlines() if line.startswith("ERROR"))
    assert "punkt_tab" in err and "stage_nltk_data" in err
    assert "COUNT True False" in proc.stdout


def test_staging_nltk_data_without_network_is_one_clear_error(tmp_path):
    out = tmp_path / "resources" / "nltk_data"
    with pytest.raises(IFEvalError, match=r"staging NLTK 'punkt_tab' needs network access.*stage_nltk_data"):
        stage_nltk_data(out, index_url="http://127.0.0.1:9/index.xml")  # a closed port: no network
    assert not out.exists()  # nothing half-written at the output


def test_use_nltk_data_puts_the_staged_folder_first(tmp_path, monkeypatch):
    import nltk

    monkeypatch.setattr(nltk.data, "path", list(nltk.data.path))
    monkeypatch.delenv("NLTK_DATA", raising=False)
    use_nltk_data(tmp_path)
    assert nltk.data.path[0] == str(tmp_path.resolve()) and os.environ["NLTK_DATA"] == str(tmp_path.resolve())
    use_nltk_data(None)  # no staged folder (the embedded world): nothing changes
    assert nltk.data.path[0] == str(tmp_path.resolve())
