"""``report.html``: one self-contained page of a comparison, of ``featcache labels`` or of a sweep, for a
browser without network.

A comparison's page holds the metrics table, the figures (PNG inlined), each model's confusion matrix on
the judged split (click a cell to see its images), the most confident mistakes of each class, a map of
the judged split's vectors, the leaks left out, and the cache's provenance. The labels page holds the
likeliest label errors and a map of the split checked. A map is the vectors' first two principal
components, a dot per image coloured by class, the marked ones ringed; hovering a dot shows its image.
Images are small JPEG thumbnails inlined as data URIs; the page loads nothing from anywhere.

File paths, class names and the cache's attributes come from a data folder someone else named, so
nothing of them becomes markup: text is escaped where the page is written, the data the script needs
sits in a ``<script type="application/json">`` block (``<``, ``>`` and ``&`` written as ``\\u003c`` etc.,
so no name can close it), and the script builds its nodes with ``textContent``. Handlers are attached
by the script, none is written inline, and a Content-Security-Policy lets only that script run.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featcache.names import shown

REPORT_HTML = "report.html"
DATA_ID = "report-data"
THUMBNAIL = 80
MISTAKES_PER_CLASS = 6
LABEL_ISSUES_SHOWN = 60  # the labels page's gallery, and the dots its map rings
MAP_SIZE = (1000, 640)  # the map's drawing, in SVG units
#: class colours of the map (matplotlib's tab20, darker first)
COLOURS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)  # fmt: skip

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td.cell{cursor:pointer}td.cell:hover{outline:2px solid #36c}
td.diag{background:#e6f2e6}.gallery img{margin:2px;border:1px solid #ccc}
.mistake,.thumb{display:inline-block;margin:4px;font-size:12px;text-align:center;width:110px;vertical-align:top}
.thumb{overflow-wrap:anywhere}
#shown{min-height:2em;border:1px dashed #aaa;padding:6px}
#map{width:100%;max-width:1000px;border:1px solid #ccc;background:#fff}
#hover{min-height:110px;font-size:12px;overflow-wrap:anywhere}.legend>span{margin-right:1em;white-space:nowrap}
.swatch{display:inline-block;width:10px;height:10px;border-radius:5px;margin-right:3px}
"""

#: the page's only script: it reads the data block, and a click on a cell shows that cell's images
SCRIPT = (
    f"const DATA = JSON.parse(document.getElementById('{DATA_ID}').textContent);"
    + """
function show(model, t, p) {
  const rows = DATA.cells[model][t][p];
  const title = document.createElement('b');
  title.textContent = model + ': true ' + DATA.names[t] + ', predicted ' + DATA.names[p] + ' (' + rows.length +
    ' image(s))';
  const nodes = [title, document.createElement('br')];
  for (const r of rows) {
    const img = document.createElement('img');
    if (DATA.thumbs[r]) img.src = DATA.thumbs[r];
    img.title = DATA.paths[r]; img.alt = DATA.paths[r];
    const caption = document.createElement('div');
    caption.textContent = DATA.paths[r];
    const item = document.createElement('div');
    item.className = 'thumb';
    item.append(img, caption);
    nodes.push(item);
  }
  document.getElementById('shown').replaceChildren(...nodes);
}
for (const cell of document.querySelectorAll('td.cell')) {
  cell.addEventListener('click', () => show(cell.dataset.model, Number(cell.dataset.t), Number(cell.dataset.p)));
}
function point(i) {
  const m = DATA.map, img = document.createElement('img'), caption = document.createElement('div');
  if (DATA.thumbs[i]) img.src = DATA.thumbs[i];
  img.alt = DATA.paths[i];
  const why = m.mark[i] ? ': ' + m.marks[m.mark[i]] : '';
  caption.textContent = DATA.paths[i] + ' (' + DATA.names[m.cls[i]] + ')' + why;
  document.getElementById('hover').replaceChildren(img, caption);
}
const MAP = document.getElementById('map');
if (MAP) {
  const m = DATA.map, order = m.cls.map((_, i) => i).sort((a, b) => (m.mark[a] > 0) - (m.mark[b] > 0));
  for (const i of order) {  // the marked dots last, on top
    const dot = document.createElementNS('http://www.w3.org/2000/svg', 'circle');
    dot.setAttribute('cx', m.xy[i][0]); dot.setAttribute('cy', m.xy[i][1]);
    dot.setAttribute('r', m.mark[i] ? 7 : 4);
    dot.setAttribute('fill', m.colours[m.cls[i] % m.colours.length]);
    if (m.mark[i]) { dot.setAttribute('stroke', '#000'); dot.setAttribute('stroke-width', '2.5'); }
    dot.dataset.i = i;
    dot.classList.add(m.mark[i] ? 'marked' : 'dot');
    dot.addEventListener('mouseenter', () => point(i));
    MAP.append(dot);
  }
}
"""
)


@dataclass
class MapRows:
    """The rows a comparison's page shows: the judged split's, then ``leaks`` rows of that split left out as
    leaks; each one's path (relative to the data folder), class, and place on the map (:func:`map_points`)."""

    paths: list[str]
    classes: list[int]
    xy: list[list[int]]
    leaks: int


def write_html(out: Path, report: dict, runs, split, attrs: dict, drawn: MapRows, data_dir: Path | None) -> Path:
    """``out/report.html`` for ``report`` (as ``report.json`` holds it), the models' ``runs``, the judged
    ``split`` and the rows ``drawn`` (their images read from ``data_dir`` for the thumbnails)."""
    judged = report["significance"]["split"]
    names, paths = report["class_names"], drawn.paths
    thumbs = _thumbnails(data_dir, paths)
    predicted = {run.name: np.argmax(run.proba[judged], axis=1) for run in runs}
    cells = {name: _cells(pred, split.y, len(names)) for name, pred in predicted.items()}
    wrong = (predicted[runs[0].name] != split.y).astype(int).tolist()
    what = ["", f"mistake of {runs[0].name}", "leak, left out of the scores"]
    markup, drawing = _map(f"Map of the {judged} split", drawn.classes, names, wrong + [2] * drawn.leaks, what)
    drawing["xy"] = drawn.xy
    body = [
        f"<h1>featcache compare</h1><p>Cache <code>{_e(report['cache_path'])}</code>, fingerprint "
        f"<code>{_e(report['cache_fingerprint'][:12])}</code>: {_rows(report)}.</p>",
        _metrics_table(report),
        _figures(out),
        f"<h2>Confusion matrices on {_e(judged)}</h2><p>Click a cell to see its images.</p>",
        *(_confusion(run.name, cells[run.name], names) for run in runs),
        '<div id="shown">(no cell chosen)</div>',
        _mistakes(runs[0], judged, split.y, names, thumbs, paths),
        markup,
        _leaks(report),
        _provenance(attrs),
    ]
    data = {"cells": cells, "names": [shown(n) for n in names], "thumbs": thumbs, "paths": [shown(p) for p in paths]}
    data["map"] = drawing
    body.append(f'<script type="application/json" id="{DATA_ID}">{_json(data)}</script><script>{SCRIPT}</script>')
    return _write_page(out, "featcache compare", "".join(body))


def map_points(x: np.ndarray) -> list[list[int]]:
    """Where each of the vectors ``x`` (n, dim) is drawn: its first two principal components, scaled into
    the map's drawing (``MAP_SIZE``, a margin kept), as integer SVG coordinates."""
    from sklearn.decomposition import PCA

    if len(x) < 3:
        return [[MAP_SIZE[0] // 2, MAP_SIZE[1] // 2] for _ in range(len(x))]
    xy = PCA(2, svd_solver="randomized", random_state=0).fit_transform(np.asarray(x, dtype=np.float32))
    low, span = xy.min(axis=0), np.ptp(xy, axis=0)
    span[span == 0] = 1.0
    margin = 16
    scale = np.array(MAP_SIZE) - 2 * margin
    drawn = margin + (xy - low) / span * scale
    drawn[:, 1] = MAP_SIZE[1] - drawn[:, 1]  # the second component upward
    return np.rint(drawn).astype(int).tolist()


def _map(title: str, classes: list[int], names: list[str], mark: list[int], marks: list[str]) -> tuple[str, dict]:
    """The map's markup (a heading, the legend, an empty SVG the script draws into) and its data."""
    used = sorted(set(classes))
    legend = "".join(
        f'<span><span class="swatch" style="background:{COLOURS[c % len(COLOURS)]}"></span>{_e(names[c])}</span>'
        for c in used
    )
    ringed = sum(1 for m in mark if m)
    rings = f" Ringed: {', '.join(_e(m) for m in marks[1:])} ({ringed})." if ringed else ""
    markup = (
        f"<h2>{_e(title)}</h2><p>Each dot is an image, placed by the first two principal components of its "
        f"vector and coloured by its class.{rings} Point at a dot to see its image.</p>"
        f'<p class="legend">{legend}</p><svg id="map" viewBox="0 0 {MAP_SIZE[0]} {MAP_SIZE[1]}" '
        f'xmlns="http://www.w3.org/2000/svg"></svg><div id="hover">(no dot chosen)</div>'
    )
    return markup, {"cls": classes, "mark": mark, "marks": marks, "colours": list(COLOURS)}


def write_labels_html(out: Path, result) -> Path:
    """``out/report.html`` of ``featcache labels`` (``result`` a :class:`featcache.training.labels.LabelsResult`):
    the likeliest label errors as a gallery (given -> suggested class, the probability of each) and a map of
    the split's vectors, coloured by given class, the gallery's rows ringed."""
    class_names, paths = result.class_names, [row["path"] for row in result.rows]
    classes = [class_names.index(row["given"]) for row in result.rows]
    thumbs = _thumbnails(result.data_dir, paths)
    shown_rows = result.rows[:LABEL_ISSUES_SHOWN]
    items = "".join(
        f'<div class="thumb"><img{_src(thumbs[i])} title="{_e(row["path"])}" alt="{_e(row["path"])}"><br>'
        f"#{row['rank']} <b>{_e(row['given'])}</b> {row['given_probability']:.2f} &rarr; "
        f"<b>{_e(row['suggested'])}</b> {row['suggested_probability']:.2f}<br>{_e(row['path'])}</div>"
        for i, row in enumerate(shown_rows)
    )
    mark = [1 if i < len(shown_rows) else 0 for i in range(len(paths))]
    markup, data = _map(f"Map of the {result.split} split", classes, class_names, mark, ["", "likely label error"])
    data["xy"] = result.xy
    body = [
        f"<h1>featcache labels</h1><p>Cache <code>{_e(result.cache)}</code>: {len(result.rows)} {_e(result.split)} "
        f"rows ranked by the out-of-fold probability of their own label ({result.folds} folds), lowest first.</p>",
        f"<h2>The {len(shown_rows)} likeliest label errors</h2><p>Each image with its given class and the "
        f"probability of it, then the class the models suggest. labels.csv lists every row.</p>",
        f"<div class='gallery'>{items}</div>",
        markup,
    ]
    page_data = {"names": [shown(n) for n in class_names], "thumbs": thumbs, "paths": [shown(p) for p in paths]}
    page_data["map"] = data
    body.append(f'<script type="application/json" id="{DATA_ID}">{_json(page_data)}</script><script>{SCRIPT}</script>')
    return _write_page(out, "featcache labels", "".join(body))


def _write_page(out: Path, title: str, body: str) -> Path:
    """``out/report.html``: ``body`` (markup made here, every piece of data in it escaped) in a page whose
    policy loads nothing from outside and runs no script but ``SCRIPT``."""
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    policy = f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{digest}'"
    page = (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" '
        f'content="{policy}"><title>{_e(title)}</title><style>{STYLE}</style></head><body>{body}</body></html>'
    )
    path = out / REPORT_HTML
    path.write_text(shown(page), encoding="utf-8")  # a name's byte that is not UTF-8 reads \xff
    return path


def _e(text) -> str:
    """``text`` as markup: safe between tags and inside a quoted attribute."""
    return html.escape(str(text), quote=True)


def _json(value) -> str:
    """``value`` as JSON that cannot end the ``<script>`` block holding it: ``<``, ``>`` and ``&`` are escaped."""
    text = json.dumps(value)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _rows(report: dict) -> str:
    rows = report["rows"]
    dropped = report.get("leaks_dropped", 0)
    leaks = f", {dropped} leaking validation/test rows left out" if dropped else ""
    mislabelled = report.get("label_issues_dropped", 0)
    leaks += f", {mislabelled} likely mislabelled train rows left out" if mislabelled else ""
    return f"{rows['train']} train, {rows['validation']} validation, {rows['test']} test rows{leaks}"


def _metrics_table(report: dict) -> str:
    models = list(report["models"])
    head = "<tr><th></th>" + "".join(f"<th>{_e(m)}</th>" for m in models) + "</tr>"
    lines = []
    for split in ("validation", "test"):
        if split not in report["models"][models[0]]["evaluation"]:
            continue
        for key in ("accuracy", "macro_f1", "log_loss"):
            values = "".join(f"<td>{report['models'][m]['evaluation'][split][key]:.4f}</td>" for m in models)
            lines.append(f"<tr><th>{_e(split)} {_e(key.replace('_', ' '))}</th>{values}</tr>")
    about = "".join(f"<li><b>{_e(m)}</b>: {_e(report['models'][m].get('description', ''))}</li>" for m in models)
    return f"<h2>Scores</h2><table>{head}{''.join(lines)}</table><ul>{about}</ul>"


def _figures(out: Path) -> str:
    found = [out / "metrics.png", out / "head" / "learning_curves.png"]
    images = [f'<img alt="{_e(p.name)}" style="max-width:100%" src="{_png_uri(p)}">' for p in found if p.is_file()]
    return "<h2>Figures</h2>" + "".join(images) if images else ""


def _cells(pred: np.ndarray, y: np.ndarray, k: int) -> list[list[list[int]]]:
    """For true class t and predicted class p, the positions of the split's rows in that cell."""
    cells = [[[] for _ in range(k)] for _ in range(k)]
    for i, (t, p) in enumerate(zip(y.tolist(), pred.tolist())):
        cells[t][p].append(i)
    return cells


def _confusion(model: str, cells, names: list[str]) -> str:
    head = "<tr><th>true \\ predicted</th>" + "".join(f"<th>{_e(n)}</th>" for n in names) + "</tr>"
    rows = []
    for t, name in enumerate(names):
        tds = "".join(
            f'<td class="cell{" diag" if t == p else ""}" data-model="{_e(model)}" data-t="{t}" data-p="{p}">'
            f"{len(cells[t][p])}</td>"
            for p in range(len(names))
        )
        rows.append(f"<tr><th>{_e(name)}</th>{tds}</tr>")
    return f"<h3>{_e(model)}</h3><table>{head}{''.join(rows)}</table>"


def _mistakes(run, split: str, y: np.ndarray, names: list[str], thumbs: list[str], paths: list[str]) -> str:
    """Per true class, the wrong predictions of ``run`` it was most sure of."""
    proba = run.proba[split]
    pred = np.argmax(proba, axis=1)
    parts = [f"<h2>Most confident mistakes of {_e(run.name)} on {_e(split)}</h2>"]
    for t, name in enumerate(names):
        wrong = np.flatnonzero((y == t) & (pred != t))
        wrong = wrong[np.argsort(-proba[wrong, pred[wrong]])][:MISTAKES_PER_CLASS]
        if not len(wrong):
            continue
        items = "".join(
            f'<div class="mistake"><img{_src(thumbs[i])} title="{_e(paths[i])}" alt="{_e(paths[i])}"><br>'
            f"{_e(names[pred[i]])} {proba[i, pred[i]]:.2f}</div>"
            for i in wrong.tolist()
        )
        parts.append(f"<h3>true {_e(name)}</h3><div class='gallery'>{items}</div>")
    if len(parts) == 1:
        parts.append("<p>None: every image of the split is predicted right.</p>")
    return "".join(parts)


def _leaks(report: dict) -> str:
    if "with_leaks" not in report:
        return "<h2>Leaks</h2><p>Not checked: run <code>featcache leaks</code>, or compare with --drop-leaks.</p>"
    models = list(report["with_leaks"])
    cells = "".join(
        f"<li>{_e(m)}: {_e(s)} accuracy {report['with_leaks'][m][s]['accuracy']:.4f} with them</li>"
        for m in models
        for s in report["with_leaks"][m]
    )
    return f"<h2>Leaks</h2><p>{_e(report['leaks_dropped'])} leaking validation/test rows left out.</p><ul>{cells}</ul>"


def _provenance(attrs: dict) -> str:
    rows = "".join(
        f"<tr><th>{_e(k)}</th><td style='text-align:left'>{_e(v)}</td></tr>"
        for k, v in sorted(attrs.items())
        if k != "fingerprint_fields"
    )
    return f"<h2>Provenance of the cache</h2><table>{rows}</table>"


def _thumbnails(data_dir: Path | None, paths: list[str]) -> list[str]:
    """A small JPEG data URI of each image ("" where it cannot be read)."""
    from PIL import Image, ImageOps

    out = []
    for rel in paths:
        try:
            with Image.open(Path(data_dir or "") / rel) as im:
                im.draft("RGB", (THUMBNAIL, THUMBNAIL))  # a JPEG decoded at 1/2, 1/4 or 1/8 of its size
                small = ImageOps.exif_transpose(im).convert("RGB")
            small.thumbnail((THUMBNAIL, THUMBNAIL))
            buffer = io.BytesIO()
            small.save(buffer, "JPEG", quality=80)
            out.append("data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode())
        except OSError:
            out.append("")
    return out


def write_sweep_html(out: Path, ranking_markdown: str, pngs: list[Path]) -> Path:
    """``out/report.html`` of a sweep: the ranked table and the plots, inlined."""
    rows = [line.strip("|").split("|") for line in ranking_markdown.splitlines() if line.startswith("|")]
    table = "".join(
        "<tr>"
        + "".join(f"<{'th' if i == 0 else 'td'}>{_e(c.strip())}</{'th' if i == 0 else 'td'}>" for c in r)
        + "</tr>"
        for i, r in enumerate(rows)
        if not set("".join(r)) <= set("-: ")
    )
    images = "".join(f'<img alt="{_e(p.name)}" src="{_png_uri(p)}">' for p in pngs)
    return _write_page(out, "featcache sweep", f"<h1>featcache sweep</h1><table>{table}</table>{images}")


def _png_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _src(uri: str) -> str:
    """The ``src`` attribute of a thumbnail, none where the image could not be read (the alt text shows)."""
    return f' src="{_e(uri)}"' if uri else ""
