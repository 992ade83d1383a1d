"""Rule prepare_data: one prompt set or benchmark -> the normalised schema (id, prompt, answer, checker).

World source: the split is already in the schema (plus ``response`` for some splits) -- validate
and keep the four columns. Hub source: map the staged dataset with its adapter
(``snakemake.params.spec`` = config ``datasets.<name>``), then validate; a local file of ``source: checkpoints``
likewise (or, without adapter fields, validated as already in the schema). Thin wrapper over
:mod:`rocktokens.data.prepare`.
"""
from rocktokens.data import prepare, read_dataset_file, validate_prepared
from rocktokens.core.io import read_parquet, setup_logging, write_parquet

log = setup_logging(snakemake.log[0])  # noqa: F821
name = snakemake.wildcards.dataset  # noqa: F821
source = snakemake.params.source  # noqa: F821
path = str(snakemake.input[0])  # noqa: F821
raw = read_parquet(path, f"dataset {name}") if path.endswith(".parquet") else read_dataset_file(path)
log.info("prepare %s (source %s): %d rows, columns %s", name, source, len(raw), list(raw.columns))
if source == "world":
    df = validate_prepared(raw, name)
else:  # a staged hub dataset or a local file (source checkpoints), through its adapter
    df = prepare(raw, dict(snakemake.params.spec), name)  # noqa: F821
log.info("prepared %s: %d rows; checkers %s", name, len(df), df["checker"].str.split(":").str[0].value_counts().to_dict())
write_parquet(df, snakemake.output[0])  # noqa: F821
