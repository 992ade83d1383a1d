"""`snakemake --report` on the smoke run: every figure and table of the study is in it, with its caption."""
import base64
import html
import json
import re

import pandas as pd
import pytest

from conftest import REPO, run_snakemake

pytestmark = pytest.mark.slow  # builds the report of the shared smoke DAG

# (path inside results/<run>/, caption file in report/, category): every figure and table of the study.
EXPECTED = [
    ("figures/figure2.png", "figure2.rst", "Rock Tokens"),
    ("figures/figure3.png", "figure3.rst", "Gradient geometry"),
    ("figures/optimizer_probe.png", "optimizer_probe.rst", "Gradient geometry"),
    ("geometry/finding.md", "geometry_finding.rst", "Gradient geometry"),
    ("figures/figure4.png", "figure4.rst", "Knockout"),
    ("figures/figure6.png", "figure6.rst", "Knockout"),
    ("knockout/table1.tsv", "table1.rst", "Knockout"),
    ("knockout/table2.tsv", "table2.rst", "Knockout"),
    ("knockout/table2_agreement.tsv", "agreement.rst", "Knockout"),
    ("knockout/multiple_testing.tsv", "multiple_testing.rst", "Knockout"),
    ("knockout/sign_test.tsv", "sign_test.rst", "Knockout"),
    ("figures/figure5.png", "figure5.rst", "Rock freeze"),
    ("freeze/accuracy.tsv", "freeze_accuracy.rst", "Rock freeze"),
    ("freeze/arms.tsv", "freeze_arms.rst", "Rock freeze"),
    ("eval/accuracy.tsv", "accuracy.rst", "Distillation"),
    ("eval/distillation_checkpoints.tsv", "distillation.rst", "Distillation"),
    ("figures/distillation.png", "distillation.rst", "Distillation"),
    ("recovery/recovery.tsv", "recovery.rst", "Planted roles"),
    ("recovery/confusion.tsv", "recovery.rst", "Planted roles"),
    ("recovery/target.tsv", "recovery.rst", "Planted roles"),
    ("figures/recovery.png", "recovery.rst", "Planted roles"),
    ("summary.html", "summary.rst", "Summary"),
]


def _text(fragment: str) -> str:
    """Caption HTML → plain text with single spaces."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", fragment))).strip()


def _embedded(script_id: str, page: str):
    m = re.search(rf'<script id="{script_id}">\s*var \w+ = (.*?);?\s*</script>', page, re.S)
    assert m, f"no <script id={script_id}> in the report"
    return json.loads(m.group(1))


def _payload(uri: str) -> bytes:
    head, _, data = uri.partition(",")
    assert head.startswith("data:") and head.endswith(";base64"), head[:80]
    return base64.b64decode(data)


@pytest.fixture(scope="module")
def report(smoke_dir):
    out = smoke_dir / "report.html"
    proc = run_snakemake(smoke_dir, "--report", str(out), timeout=600)
    assert "ERROR/" not in proc.stderr, proc.stderr[-3000:]  # a caption that is not valid reStructuredText
    page = out.read_text()
    return page, _embedded("results", page), _embedded("categories", page)


def test_every_figure_and_table_is_in_the_report_with_its_caption(report):
    page, results, categories = report
    for rel, caption_file, category in EXPECTED:
        key = f"results/smoke/{rel}"
        assert key in results, f"{rel} missing from the report (has {sorted(results)})"
        res = results[key]
        caption = _text(res["caption"])
        first = " ".join(_text((REPO / "report" / caption_file).read_text()).split()[:8])
        assert first and first in caption, f"{rel}: caption does not start like report/{caption_file}"
        assert re.search(r"Built (from|by rule) .*results/", caption), f"{rel}: caption names no target"
        assert key in sum(categories.get(category, {}).values(), []), f"{rel} not under {category!r}"
        data = _payload(res["data_uri"])
        assert len(data) > 100, f"{rel} is embedded empty"
        if rel.endswith(".png"):
            assert data[:8] == b"\x89PNG\r\n\x1a\n"
    # the front page (report/workflow.rst) is rendered
    assert "this run vs the paper" in _text(page)


def test_summary_is_rendered_and_matches_its_files(report, smoke_results):
    _, results, _ = report
    page = _payload(results["results/smoke/summary.html"]["data_uri"]).decode()
    table = pd.read_parquet(smoke_results / "summary.parquet")
    md = (smoke_results / "summary.md").read_text()
    assert md.startswith("# This run vs the paper")
    sections = list(dict.fromkeys(table["section"]))
    assert len(sections) == 5 and page.count("<table>") == 5
    for q in ("median rock density per sequence, context-consistent", "coverage of the corpus KL at the chosen K",
              "median ‖ḡ‖ — Rock tokens", "median KL early → late — Rare high-KL", "Strong Pillars (math",
              "Table 1: max |r|", "sign test", "masked share of response tokens", "update-time ratio",
              "pass@1 on hard_avg"):
        rows = table[table["quantity"].str.contains(q, regex=False)]
        assert len(rows), f"summary lacks {q!r}"
        for r in rows.itertuples():
            assert html.escape(r.this_run) in page and r.this_run.replace("|", "\\|") in md
    # the numbers are the artifacts' numbers
    chosen = json.loads((smoke_results / "rocks" / "R.json").read_text())
    row = table[table["quantity"].str.startswith("median rock density per sequence, context")].iloc[0]
    assert row["value"] == pytest.approx(chosen["median_density_ctx"], rel=1e-5)
