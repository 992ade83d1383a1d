"""Entry point of the training rules (pretrain | stage1 | stage2 | opd_arm).

Launched by Snakemake's `shell:` with `python` (CPU) or `accelerate launch ...` (multi-GPU), so it takes
arguments instead of the `snakemake` object. All logic lives in rocktokens.distill.entry and rocktokens.freeze.run (the arms).
"""
import argparse
import json

from rocktokens.core.io import setup_logging
from rocktokens.distill.entry import STAGES as DISTILL_STAGES
from rocktokens.freeze.run import opd_arm

STAGES = {**DISTILL_STAGES, "opd_arm": opd_arm}


def _pairs(items):
    return dict(item.split("=", 1) for item in items)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("stage", choices=sorted(STAGES))
    ap.add_argument("--spec", required=True, help="JSON: the stage's config section, seed, threads")
    ap.add_argument("--input", nargs="+", default=[], help="name=path")
    ap.add_argument("--output", nargs="+", default=[], help="name=path")
    ap.add_argument("--state", required=True, help="resumable state directory")
    ap.add_argument("--log", default=None)
    a = ap.parse_args()
    setup_logging(a.log)
    STAGES[a.stage](json.loads(a.spec), _pairs(a.input), _pairs(a.output), a.state)
