"""The real IFEval instruction checks for hub benchmarks (checker ``"ifeval:<json>"``, rocktokens.data.prepare).

The checks are lm-eval's port of Google's IFEval code (``lm_eval.tasks.ifeval``), prompt-level *strict* accuracy: a
response is correct when it follows every instruction of its prompt (``test_instruction_following_strict``).

Two practical points, both handled here:

* Importing ``lm_eval.tasks`` pulls the whole harness (datasets, sacrebleu, ...). Only the three IFEval modules are
  needed (their own deps: langdetect, immutabledict, nltk), so when the harness is not installed they are loaded
  from the installed lm-eval package under their own names without its ``lm_eval.tasks`` package ``__init__``.
* ``length_constraints:number_sentences`` needs NLTK's ``punkt_tab`` data, which lm-eval downloads at import time.
  Compute nodes have no network: the data is staged once on the login node (rule ``stage_nltk_data`` →
  ``resources/nltk_data``) and pointed to with :func:`use_nltk_data`; the import-time download is skipped, and a
  missing ``punkt_tab`` is one clear error when (and only when) a sentence count is checked.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import sys
import types
from functools import lru_cache
from pathlib import Path

PUNKT = "tokenizers/punkt_tab"
IFEVAL_DEPS = ("langdetect", "immutabledict", "nltk")
STAGE_HINT = ("stage it where there is network: `snakemake --configfile configs/paper.yaml --until stage_nltk_data` "
              "(resources/nltk_data), or `python -m nltk.downloader -d <dir> punkt_tab` and NLTK_DATA=<dir>")


class IFEvalError(RuntimeError):
    """IFEval checks cannot run: lm-eval missing, an unknown instruction, or NLTK data not staged."""


def use_nltk_data(path: str | os.PathLike | None) -> None:
    """Search ``path`` (a staged ``nltk_data`` folder) first for NLTK data; ``None`` leaves the search path."""
    if path is None:
        return
    path = str(Path(path).resolve())
    os.environ["NLTK_DATA"] = os.pathsep.join([path, *filter(None, [os.environ.get("NLTK_DATA")])])
    if "nltk" in sys.modules:
        import nltk

        if path not in nltk.data.path:
            nltk.data.path.insert(0, path)


def stage_nltk_data(out_dir, packages: tuple[str, ...] = ("punkt_tab",), index_url: str | None = None) -> Path:
    """Rule stage_nltk_data: download NLTK ``packages`` into ``out_dir`` (a login-node rule; needs network).

    ``index_url``: the NLTK data index (default NLTK's own, or ``$NLTK_DOWNLOAD_URL`` for a mirror).

    Downloads go to a sibling ``.<name>.partial`` folder renamed onto ``out_dir`` when every package is there (and
    ``STAGED.json`` records the nltk version): nothing half-written. Without network: one clear error."""
    import shutil

    import nltk

    out = Path(out_dir)
    partial = out.parent / f".{out.name}.partial"
    partial.mkdir(parents=True, exist_ok=True)
    downloader = nltk.downloader.Downloader(server_index_url=index_url or os.environ.get("NLTK_DOWNLOAD_URL"))
    for pkg in packages:
        try:
            ok = downloader.download(pkg, download_dir=str(partial), quiet=True, raise_on_error=True)
        except Exception as err:  # URLError, ValueError(... urlopen error ...), timeouts
            raise IFEvalError(f"staging NLTK {pkg!r} needs network access to the NLTK data server "
                              f"({downloader.url}); run the rule stage_nltk_data on a login node. "
                              f"(cause: {type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''})") from err
        if not ok:
            raise IFEvalError(f"staging NLTK {pkg!r} failed (nltk.download returned False): see the log")
    (partial / "STAGED.json").write_text(json.dumps({"packages": list(packages), "nltk": nltk.__version__}, indent=2))
    if out.exists():
        shutil.rmtree(out)
    os.replace(partial, out)
    return out


_PUNKT_FOUND = False  # once found it stays (a staged folder does not vanish mid-run); a miss is checked again


def has_punkt() -> bool:
    """Whether NLTK can load the English punkt_tab model (every file of it, not just the folder)."""
    global _PUNKT_FOUND
    if not _PUNKT_FOUND:
        from nltk.tokenize.punkt import PunktTokenizer

        try:
            PunktTokenizer("english")
        except (LookupError, OSError):
            return False
        _PUNKT_FOUND = True
    return True


@contextlib.contextmanager
def _no_import_time_download():
    """lm-eval's instructions_util downloads punkt_tab at import unless LOCAL_RANK != "0" (only rank 0 downloads):
    present a non-zero rank during the import so that an offline node never tries the network."""
    old = os.environ.get("LOCAL_RANK")
    os.environ["LOCAL_RANK"] = "-1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("LOCAL_RANK", None)
        else:
            os.environ["LOCAL_RANK"] = old


@lru_cache(maxsize=1)
def _lm_eval_ifeval() -> types.ModuleType:
    """lm-eval's ``lm_eval.tasks.ifeval.utils`` (the strict/loose test functions and the instruction registry)."""
    name = "lm_eval.tasks.ifeval"
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        raise IFEvalError("IFEval checks need lm-eval's IFEval code: pip install --no-deps lm-eval==0.4.13 "
                          "langdetect immutabledict nltk (requirements.txt and the Makefile do)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "tasks" / "ifeval"
    with _no_import_time_download():
        try:
            try:
                return importlib.import_module(f"{name}.utils")
            except ImportError as err:
                if err.name in IFEVAL_DEPS:
                    raise
            # The harness's own deps are absent: load the IFEval modules alone, under their names, from its folder.
            for mod in [m for m in sys.modules if m == "lm_eval.tasks" or m.startswith("lm_eval.tasks.")]:
                del sys.modules[mod]  # what is left of the failed import of the harness
            pkg = types.ModuleType(name)
            pkg.__path__ = [str(folder)]
            pkg.__package__ = name
            sys.modules[name] = pkg
            return importlib.import_module(f"{name}.utils")
        except ImportError as err:
            raise IFEvalError(f"IFEval checks need {err.name!r}: pip install {' '.join(IFEVAL_DEPS)}") from err


def parse_spec(spec: str) -> dict:
    """The JSON after ``"ifeval:"``: ``instruction_id_list`` and ``kwargs`` (one dict per instruction)."""
    try:
        d = json.loads(spec)
        ids, kwargs = list(d["instruction_id_list"]), list(d["kwargs"])
    except (ValueError, KeyError, TypeError) as err:
        raise IFEvalError(f"bad IFEval checker spec {spec[:120]!r}: {err}") from err
    if len(ids) != len(kwargs) or not ids:
        raise IFEvalError(f"bad IFEval checker spec {spec[:120]!r}: {len(ids)} instructions, {len(kwargs)} kwargs")
    return {"instruction_id_list": ids, "kwargs": [dict(k or {}) for k in kwargs]}


def follows(response: str | None, spec: str) -> list[bool]:
    """Per instruction of ``spec``: does ``response`` follow it (lm-eval's strict IFEval test)?"""
    d = parse_spec(spec)
    utils = _lm_eval_ifeval()
    unknown = [i for i in d["instruction_id_list"] if i not in utils.instructions_registry.INSTRUCTION_DICT]
    if unknown:
        raise IFEvalError(f"unknown IFEval instruction(s) {unknown}")
    if "length_constraints:number_sentences" in d["instruction_id_list"] and not has_punkt():
        import nltk

        raise IFEvalError(f"IFEval 'length_constraints:number_sentences' needs NLTK {PUNKT!r} data, not found in "
                          f"{nltk.data.path}: {STAGE_HINT}")
    # no IFEval instruction reads the prompt (repeat_prompt carries its text in kwargs): prompt stays empty
    inp = utils.InputExample(key=0, instruction_id_list=d["instruction_id_list"], prompt="", kwargs=d["kwargs"])
    return list(utils.test_instruction_following_strict(inp, response or "").follow_instruction_list)


def check_ifeval(response: str | None, spec: str) -> bool:
    """IFEval prompt-level strict correctness: every instruction followed."""
    return all(follows(response, spec))
