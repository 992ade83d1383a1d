"""The synthetic verifiable math world (CPU stand-in for the paper's data).

Public API:

* :data:`DEFAULT_WORLD_CONFIG`, :func:`validate_world_config`
* :func:`make_world` (``cfg, seed -> {split: DataFrame}``), :func:`all_texts`,
  :data:`SPLITS`, :func:`world_problems`, :func:`generate_problem`, :class:`Problem`,
  :func:`make_prompt`
* :func:`render` (teacher / student styles), :data:`STYLES`
* planted causal roles: :func:`planted_words` (the planted token types, by role), :func:`plant_for`,
  :class:`Plant`
* :func:`extract_answer`, :func:`check_math`, :func:`check_instruction`, :func:`score`,
  :data:`INSTRUCTION_RULES`
"""

from rocktokens.checking.checker import (
    INSTRUCTION_RULES,
    check_instruction,
    check_math,
    extract_answer,
    score,
)
from rocktokens.world.generator import (
    DEFAULT_WORLD_CONFIG,
    SPLITS,
    Problem,
    Step,
    all_texts,
    generate_problem,
    make_prompt,
    make_world,
    plant_for,
    planted_words,
    validate_world_config,
    world_problems,
)
from rocktokens.world.styles import STYLES, Plant, render

__all__ = [
    "DEFAULT_WORLD_CONFIG",
    "INSTRUCTION_RULES",
    "Plant",
    "SPLITS",
    "STYLES",
    "Problem",
    "Step",
    "all_texts",
    "check_instruction",
    "check_math",
    "extract_answer",
    "generate_problem",
    "make_prompt",
    "make_world",
    "plant_for",
    "planted_words",
    "render",
    "score",
    "validate_world_config",
    "world_problems",
]
