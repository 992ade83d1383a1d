"""Prompt sets and benchmarks: hub staging (paper scale) and normalisation into the workflow's schema.

Every downstream rule reads one parquet per dataset with the columns of :data:`COLUMNS`:

* ``id``      -- unique string id within the dataset;
* ``prompt``  -- the user message;
* ``answer``  -- the gold answer as a string (``""`` when there is none, e.g. IFEval, prompt sets);
* ``checker`` -- ``"math"`` (math-verify), ``"ifeval:<json>"`` (the real IFEval checks; JSON of
  ``{"instruction_id_list": [...], "kwargs": [...]}``) or ``"instruction:<rule>"`` (the embedded
  world's IFEval stand-in).

:mod:`rocktokens.data.hub` downloads models and datasets (network; imported lazily), and
:mod:`rocktokens.data.prepare` turns a staged dataset into the schema and validates it (no network).
"""
from rocktokens.data.prepare import (
    COLUMNS,
    PROMPT_SETS,
    DataError,
    get_field,
    last_boxed,
    normalise,
    prepare,
    read_dataset_file,
    validate_prepared,
)

__all__ = ["COLUMNS", "PROMPT_SETS", "DataError", "get_field", "last_boxed", "normalise", "prepare",
           "read_dataset_file", "validate_prepared"]
