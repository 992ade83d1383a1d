"""Figure 2 from small synthetic artifact frames."""
import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from rocktokens.core.plotting import FigureInputError
from rocktokens.rocks.figures import figure2
from rocktokens.rocks.sets import coverage_curve, rock_set


def _frames():
    rng = np.random.default_rng(0)
    V = 200
    freq = np.maximum(1, (5000 / np.arange(1, V + 1))).astype(int)
    loss = rng.lognormal(-1, 1, V)
    ts = pd.DataFrame({"token_id": np.arange(V), "qwen3_id": np.arange(V), "token": [f"t{i}" for i in range(V)],
                       "freq": freq, "mean_loss": loss, "R": freq * loss})
    rocks = rock_set(ts, 20)
    dens = pd.DataFrame({"seq_id": np.arange(300), "density": rng.beta(4, 16, 300)})
    dens["density_ctx"] = dens["density"] * rng.uniform(0.2, 0.6, 300)
    cov = coverage_curve(ts)
    rows = [{"K": K, "n": n, "jaccard_mean": min(1, 0.5 + n / 1000 + 5 / K), "jaccard_lo": 0.4, "jaccard_hi": 0.95,
             "B": 20} for K in (10, 20, 50) for n in (50, 100, 200)]
    return ts, rocks, dens, cov, pd.DataFrame(rows)


def test_figure2_writes_a_real_png(tmp_path):
    out = tmp_path / "figs" / "figure2.png"
    ret = figure2(*_frames(), out)
    assert ret == out and out.exists()
    assert out.stat().st_size > 20_000
    img = imread(out)
    assert img.shape[0] > 600 and img.shape[1] > 800
    assert img[..., :3].std() > 0.05  # not a blank canvas
    assert [p.name for p in out.parent.iterdir()] == ["figure2.png"]  # no temp file left behind


@pytest.mark.parametrize("which", [0, 1, 2, 3, 4])
def test_figure2_rejects_empty_frames(tmp_path, which):
    frames = list(_frames())
    frames[which] = frames[which].head(0)
    out = tmp_path / "f.png"
    with pytest.raises(FigureInputError, match="is empty"):
        figure2(*frames, out)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_figure2_rejects_missing_column_and_bad_density(tmp_path):
    ts, rocks, dens, cov, st = _frames()
    with pytest.raises(FigureInputError, match=r"coverage lacks column\(s\) \['coverage'\]"):
        figure2(ts, rocks, dens, cov.drop(columns="coverage"), st, tmp_path / "f.png")
    with pytest.raises(FigureInputError, match=r"\[0, 1\]"):
        figure2(ts, rocks, dens.assign(density=dens["density"] * 100), cov, st, tmp_path / "f.png")


def test_figure2_draws_the_configured_stability_bar(tmp_path, monkeypatch):
    """The dotted bar of (c) and (d) is the min_jaccard handed in (rocks.stability.min_jaccard, from
    chosen_K.json), not a constant; none is drawn when none is given."""
    import rocktokens.rocks.figures as F

    figs = []
    monkeypatch.setattr(F, "save", lambda fig, out, dpi: figs.append(fig) or out)

    def bars(fig):
        return sorted({round(float(ln.get_ydata()[0]), 6) for ax in fig.axes for ln in ax.get_lines()
                       if ln.get_linestyle() == ":" and len(set(ln.get_ydata())) == 1 and len(ln.get_xdata()) == 2
                       and ln.get_xdata()[0] == 0 and ln.get_xdata()[1] == 1})

    figure2(*_frames(), tmp_path / "a.png", min_jaccard=0.55, score="R_ctx")
    figure2(*_frames(), tmp_path / "b.png")
    assert bars(figs[0]) == [0.55] and bars(figs[1]) == []
    assert figs[0].axes[2].get_xlabel() == "K (top-K tokens by R_ctx)"
