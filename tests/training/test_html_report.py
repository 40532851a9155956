"""report.html: one self-contained page whose numbers, cells and thumbnails are those of the comparison."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

from featcache.api import compare, sweep
from tests.support import tiny_cache


class _Page(HTMLParser):
    """Every URL the page would load, the text of its cells, and its script."""

    def __init__(self):
        super().__init__()
        self.urls, self.cells, self.script, self._in = [], [], "", None

    def handle_starttag(self, tag, attrs):
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]
        self._in = tag

    def handle_data(self, data):
        if self._in in ("td", "th"):
            self.cells.append(data.strip())
        if self._in == "script":
            self.script += data


def _data(script: str, name: str):
    return json.loads(re.search(rf"const {name} = (.*?);\n", script).group(1))


def test_the_compare_page_is_self_contained_and_shows_the_reports_numbers(tmp_path):
    cache = tiny_cache(tmp_path / "c", counts={"train": 12, "validation": 4, "test": 5})
    result = compare(cache, tmp_path / "out", epochs=2)
    assert (tmp_path / "out" / "report.html") in result.files
    page = _Page()
    page.feed((tmp_path / "out" / "report.html").read_text())
    assert page.urls and all(u.startswith("data:image/") for u in page.urls)  # nothing from the network
    report = result.report
    for model in ("keras_head", "logistic"):
        assert f"{report['models'][model]['evaluation']['test']['accuracy']:.4f}" in page.cells
    cells = _data(page.script, "CELLS")
    for model in ("keras_head", "logistic"):
        counts = [[len(c) for c in row] for row in cells[model]]
        assert counts == report["models"][model]["evaluation"]["test"]["confusion_matrix"]
    thumbs, paths = _data(page.script, "THUMBS"), _data(page.script, "PATHS")
    assert len(thumbs) == len(paths) == 10 and all(t.startswith("data:image/jpeg;base64,") for t in thumbs)
    assert all(p.startswith("test/") for p in paths)
    assert report["cache_fingerprint"][:12] in (tmp_path / "out" / "report.html").read_text()


def test_the_sweep_writes_a_page_of_its_ranking(tmp_path):
    cache = tiny_cache(tmp_path / "c", counts={"train": 8, "validation": 4})
    grid = {"lr": (0.01,), "inner": (0, 4), "dropout": (0.0,), "seeds": 1, "epochs": 2, "jobs": 1}
    sweep(cache, tmp_path / "sweep", **grid)
    page = _Page()
    page.feed((tmp_path / "sweep" / "report.html").read_text())
    assert len(page.urls) == 4 and all(u.startswith("data:image/png;base64,") for u in page.urls)
    assert "rank" in page.cells
