"""report.html: one self-contained page whose numbers, cells and thumbnails are those of the comparison,
and in which no name read from a data folder or a cache becomes markup."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from types import SimpleNamespace

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from featcache.api import compare, sweep
from featcache.names import shown
from featcache.training.html_report import DATA_ID, MapRows, write_html
from tests.support import tiny_cache


class _Page(HTMLParser):
    """Every URL the page would load, every tag with its attribute names, the text of its cells, and the
    data block the script reads."""

    def __init__(self):
        super().__init__()
        self.urls, self.tags, self.cells, self.data, self._in = [], [], [], "", None

    def handle_starttag(self, tag, attrs):
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]
        self.tags.append((tag, sorted(k for k, _ in attrs)))
        self._in = "data" if tag == "script" and ("id", DATA_ID) in attrs else tag
        if tag in ("td", "th"):
            self.cells.append("")

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, data):
        if self._in in ("td", "th"):
            self.cells[-1] += data
        if self._in == "data":
            self.data += data


def _parse(path) -> _Page:
    page = _Page()
    page.feed(path.read_bytes().decode("utf-8"))  # as written: a carriage return in a name stays one
    page.close()
    return page


def test_the_compare_page_is_self_contained_and_shows_the_reports_numbers(tmp_path):
    cache = tiny_cache(tmp_path / "c", counts={"train": 12, "validation": 4, "test": 5})
    result = compare(cache, tmp_path / "out", epochs=2)
    assert (tmp_path / "out" / "report.html") in result.files
    page = _parse(tmp_path / "out" / "report.html")
    assert page.urls and all(u.startswith("data:image/") for u in page.urls)  # nothing from the network
    report = result.report
    for model in ("keras_head", "logistic"):
        assert f"{report['models'][model]['evaluation']['test']['accuracy']:.4f}" in page.cells
    data = json.loads(page.data)
    cells = data["cells"]
    for model in ("keras_head", "logistic"):
        counts = [[len(c) for c in row] for row in cells[model]]
        assert counts == report["models"][model]["evaluation"]["test"]["confusion_matrix"]
    thumbs, paths = data["thumbs"], data["paths"]
    assert len(thumbs) == len(paths) == 10 and all(t.startswith("data:image/jpeg;base64,") for t in thumbs)
    assert all(p.startswith("test/") for p in paths)
    assert report["cache_fingerprint"][:12] in (tmp_path / "out" / "report.html").read_text()


def test_the_sweep_writes_a_page_of_its_ranking(tmp_path):
    cache = tiny_cache(tmp_path / "c", counts={"train": 8, "validation": 4})
    grid = {"lr": (0.01,), "inner": (0, 4), "dropout": (0.0,), "seeds": 1, "epochs": 2, "jobs": 1}
    sweep(cache, tmp_path / "sweep", **grid)
    page = _parse(tmp_path / "sweep" / "report.html")
    assert len(page.urls) == 4 and all(u.startswith("data:image/png;base64,") for u in page.urls)
    assert "rank" in page.cells
    assert not any(name.startswith("on") for _, names in page.tags for name in names)


#: any name a file system holds, as featcache reads it: no NUL, a byte that is not UTF-8 as a lone surrogate
NAME = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
    | st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF),
    min_size=1,
    max_size=16,
)


def _page_of(out, names: list[str], paths: list[str], text: str) -> _Page:
    """The page of one model named ``text`` on ``paths`` of classes ``names``, wrong on every row (so every
    class has mistakes), with ``text`` also as the cache path, the fingerprint and a provenance attribute."""
    k, n = len(names), len(paths)
    y = np.arange(n) % k
    proba = np.full((n, k), 0.1 / k) + 0.9 * np.eye(k)[(y + 1) % k]
    scores = {"accuracy": 0.0, "macro_f1": 0.0, "log_loss": 2.0}
    report = {
        "significance": {"split": "test"},
        "class_names": names,
        "cache_path": text,
        "cache_fingerprint": text,
        "rows": {"train": 1, "validation": 1, "test": n},
        "models": {text: {"evaluation": {"test": scores}, "description": text}},
    }
    run = SimpleNamespace(name=text, proba={"test": proba})
    drawn = MapRows(paths, y.tolist(), [[i, i] for i in range(n)], leaks=0)
    write_html(out, report, [run], SimpleNamespace(y=y), {text: text}, drawn, out / "no-images")
    return _parse(out / "report.html")


@settings(max_examples=60, deadline=None)
@given(
    names=st.lists(NAME, min_size=2, max_size=3, unique=True), paths=st.lists(NAME, min_size=3, max_size=5), text=NAME
)
@example(
    names=["x<", "\"'&<i>q"],
    paths=["test/x</script><img src=x onerror=document.title='pwned'>.png", "test/\"'&<i>q/\"'&<b>.jpg", "<!--"],
    text="</code><script>document.title='pwned'</script>\udcff",
)
def test_no_name_becomes_markup(tmp_path_factory, names, paths, text):
    out = tmp_path_factory.mktemp("page")
    page = _page_of(out, names, paths, text)
    plain = _page_of(out, [f"c{i}" for i in range(len(names))], [f"p{i}" for i in range(len(paths))], "t")
    assert page.tags == plain.tags  # the same elements with the same attributes: nothing injected
    assert not any(name.startswith("on") for _, attrs in page.tags for name in attrs)
    names, paths, text = [shown(n) for n in names], [shown(p) for p in paths], shown(text)  # b"\xff" reads \xff
    assert "<" not in page.data and json.loads(page.data)["names"] == names and json.loads(page.data)["paths"] == paths
    header = page.cells.index("true \\ predicted")
    assert page.cells[header + 1 : header + 1 + len(names)] == names  # the class names, as text
    assert page.cells[-2:] == [text, text]  # the provenance attribute, name and value
