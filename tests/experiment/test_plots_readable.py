"""The figures read well (issue 22, item 6): chance shown, labels clear of lines, legends off the data.

Each figure is drawn and its matplotlib objects are inspected (texts, lines, legend boxes).
"""

import copy

import pytest
import torch

import torch_slt
from torch_slt.experiment import plots

pytest.importorskip("matplotlib")


@pytest.fixture
def figures(monkeypatch):
    """Keep every figure the plot functions save, to inspect it."""
    kept = []
    save = plots._save

    def spy(fig, path):
        kept.append(fig)
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", spy)
    return kept


def _no_overlap(a, b) -> bool:
    return a.x1 <= b.x0 or b.x1 <= a.x0 or a.y1 <= b.y0 or b.y1 <= a.y0


def _tickets():
    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(30, 30), torch.nn.ReLU(), torch.nn.Linear(30, 30),
                               torch.nn.ReLU(), torch.nn.Linear(30, 4))
    out = {}
    for name, method, kw in (("mag", "magnitude", {}), ("rnd", "random", {"seed": 1}),
                             ("rnd2", "random", {"seed": 2})):
        model = copy.deepcopy(base)
        torch_slt.apply(model, method, sparsity=0.5, scope="layer", **kw)
        out[name] = {n: m.detach().clone() for n, m in model.named_buffers() if n.endswith("_mask")}
    return out


def test_overlap_heatmap_shows_the_ratio_to_chance(figures, tmp_path):
    from torch_slt.analysis import chance_matrix, overlap_matrix, plot_overlap_heatmap

    tickets = _tickets()
    masks = [{k[: -len("_mask")]: v for k, v in t.items()} for t in tickets.values()]
    jac, chance = overlap_matrix(masks), chance_matrix(masks)
    assert chance[0, 1] == pytest.approx(1 / 3, abs=0.01)        # two half-dense masks
    plot_overlap_heatmap(jac, list(tickets), tmp_path / "overlap.png", chance=chance)
    ax = figures[-1].axes[0]
    image = ax.get_images()[0]
    ratio = image.get_array()
    assert ratio[1, 2] == pytest.approx(float(jac[1, 2] / chance[1, 2]))   # the colour is J / chance
    assert type(image.norm).__name__ == "LogNorm" and image.norm.vmin < 1 < image.norm.vmax
    texts = {t.get_text() for t in ax.texts}
    assert f"{float(jac[0, 1]):.2f}\n/{float(chance[0, 1]):.2f}" in texts
    assert "chance" in figures[-1].axes[1].get_ylabel()


def test_layer_profiles_have_an_x_label_and_join_no_layers(figures, tmp_path):
    from torch_slt.analysis import plot_layer_profiles

    tickets = _tickets()
    plot_layer_profiles(tickets, tmp_path / "profiles.png")
    ax = figures[-1].axes[0]
    assert ax.get_xlabel() == "gated tensor, in model order"
    lines = [line for line in ax.get_lines() if line.get_label() in tickets]
    assert len(lines) == 3 and all(line.get_linestyle() == "None" for line in lines)
    xs = [sorted(line.get_xdata()) for line in lines]
    assert xs[0][0] < xs[1][0] < xs[2][0] < 0.5                # side by side within a tensor's column
    assert ax.get_legend() is None and figures[-1].legends      # the legend is outside the axes


@pytest.mark.parametrize("line", [0.0, 5.0, 25.0, 50.0, 70.0, 89.5, 99.0])
def test_bar_labels_never_cross_the_overall_line(line):
    for height in [h / 2 for h in range(0, 201)]:
        bottom, inside = plots.label_position(height, line)
        top = bottom + plots._LABEL_HEIGHT
        assert top < line - plots._LINE_BAND or bottom > line + plots._LINE_BAND, (height, line)
        assert not inside or top < height                      # a label inside a bar fits in it


def test_layer_sparsity_labels_clear_the_overall_line_in_the_drawn_figure(figures, tmp_path):
    model = torch.nn.Sequential(*[torch.nn.Linear(20, 20) for _ in range(4)])
    torch_slt.apply(model, "magnitude", sparsity=0.7, scope="layer")    # every bar ends on the line
    report = torch_slt.report(model)
    plots.plot_layer_sparsity(report, tmp_path / "layers.png")
    fig = figures[-1]
    ax = fig.axes[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    overall = [line for line in ax.get_lines() if line.get_linestyle() == "--"][0]
    band = overall.get_window_extent(renderer)
    labels = [t for t in ax.texts if "%" in t.get_text()]
    assert len(labels) == 4
    assert all(_no_overlap(t.get_window_extent(renderer), band) for t in labels)
    legend = fig.legends[0].get_window_extent(renderer)
    assert all(_no_overlap(t.get_window_extent(renderer), legend) for t in labels)


def test_curve_has_a_chance_line_and_the_legend_covers_no_point(figures, tmp_path):
    rows = [{"method": m, "sparsity": s, "accuracy": a} for m, pts in
            {"stg": [(0.5, 0.95), (0.9, 0.91)], "snip": [(0.5, 0.12), (0.9, 0.10)]}.items() for s, a in pts]
    plots.plot_accuracy_vs_sparsity(rows, tmp_path / "curve.png", dense_accuracy=0.97, chance_accuracy=0.1)
    fig = figures[-1]
    ax = fig.axes[0]
    dotted = [line for line in ax.get_lines() if line.get_linestyle() == ":"]
    assert len(dotted) == 1 and list(dotted[0].get_ydata()) == [10.0, 10.0]
    assert "chance (10.0%)" in [t.get_text() for t in fig.legends[0].get_texts()]
    assert ax.get_ylim()[0] < 10.0
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    assert _no_overlap(fig.legends[0].get_window_extent(renderer), ax.get_window_extent(renderer))
    with pytest.raises(ValueError, match="chance_accuracy=1.5"):
        plots.plot_accuracy_vs_sparsity(rows, tmp_path / "bad.png", chance_accuracy=1.5)
