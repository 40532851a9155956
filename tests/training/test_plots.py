"""The PNG figures: a long title stays whole inside the figure."""

from __future__ import annotations

import pytest

from featcache.training import plots

HISTORY = {
    "loss": [0.9, 0.6, 0.5],
    "accuracy": [0.5, 0.7, 0.8],
    "val_loss": [1.0, 0.8, 0.7],
    "val_accuracy": [0.4, 0.6, 0.7],
}


@pytest.mark.parametrize(
    "name",
    [
        "features.h5",
        "clothing-dataset-small_xception_imagenet_150px_avg_pool_augmented_x3_" * 3 + ".h5",
        "a very long cache name with spaces in it, " * 4 + ".h5",
    ],
)
def test_the_learning_curves_title_lies_inside_the_figure(tmp_path, monkeypatch, name):
    drawn, draw = [], plots.figure
    monkeypatch.setattr(plots, "figure", lambda *size: drawn.append(draw(*size)) or drawn[-1])
    plots.learning_curves(HISTORY, 3, tmp_path / "curves.png", f"{name}: best epoch 3")
    fig, renderer = drawn[0], drawn[0].canvas.get_renderer()
    (title,) = fig.texts
    box = title.get_window_extent(renderer)  # where savefig drew it, in pixels of the PNG
    assert 0 <= box.x0 and box.x1 <= fig.bbox.width and 0 <= box.y0 and box.y1 <= fig.bbox.height
    for ax in fig.axes:  # the panels' titles stay below the figure's
        assert ax.title.get_window_extent(renderer).y1 <= box.y0
    expected = f"{name}: best epoch 3; train - validation accuracy at best epoch: +0.100"
    assert title.get_text().split() == expected.split() or "".join(title.get_text().split()) == "".join(
        expected.split()
    )
