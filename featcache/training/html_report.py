"""``report.html``: one self-contained page of a comparison (or of a sweep), for a browser without network.

The metrics table, the figures (PNG inlined), each model's confusion matrix on the judged split
(click a cell to see its images), the most confident mistakes of each class, the leaks left out,
and the cache's provenance. Images are small JPEG thumbnails inlined as data URIs; the page
loads nothing from anywhere.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np

REPORT_HTML = "report.html"
THUMBNAIL = 96
MISTAKES_PER_CLASS = 6

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td.cell{cursor:pointer}td.cell:hover{outline:2px solid #36c}
td.diag{background:#e6f2e6}.gallery img{margin:2px;border:1px solid #ccc}
.mistake{display:inline-block;margin:4px;font-size:12px;text-align:center;width:110px}
#shown{min-height:2em;border:1px dashed #aaa;padding:6px}
"""

SCRIPT = """
function show(model, t, p) {
  const rows = CELLS[model][t][p];
  const box = document.getElementById('shown');
  box.innerHTML = '<b>' + model + ': true ' + NAMES[t] + ', predicted ' + NAMES[p] + ' (' + rows.length +
    ' image(s))</b><br>';
  for (const r of rows) {
    const img = document.createElement('img');
    img.src = THUMBS[r] || ''; img.title = PATHS[r]; img.alt = PATHS[r];
    box.appendChild(img);
  }
}
"""


def write_html(out: Path, report: dict, runs, split, attrs: dict, paths: list[str], data_dir: Path | None) -> Path:
    """``out/report.html`` for ``report`` (as ``report.json`` holds it), the models' ``runs`` and the judged
    ``split`` (its rows' ``paths`` relative to ``data_dir``, read for the thumbnails)."""
    judged = report["significance"]["split"]
    names = report["class_names"]
    thumbs = _thumbnails(data_dir, paths)
    cells = {run.name: _cells(np.argmax(run.proba[judged], axis=1), split.y, len(names)) for run in runs}
    body = [
        f"<h1>featcache compare</h1><p>Cache <code>{_e(report['cache_path'])}</code>, fingerprint "
        f"<code>{_e(report['cache_fingerprint'][:12])}</code>: {_rows(report)}.</p>",
        _metrics_table(report),
        _figures(out),
        f"<h2>Confusion matrices on {judged}</h2><p>Click a cell to see its images.</p>",
        *(_confusion(run.name, cells[run.name], names) for run in runs),
        '<div id="shown">(no cell chosen)</div>',
        _mistakes(runs[0], judged, split.y, names, thumbs, paths),
        _leaks(report),
        _provenance(attrs),
    ]
    data = {"CELLS": cells, "NAMES": names, "THUMBS": thumbs, "PATHS": paths}
    script = "".join(f"const {k} = {json.dumps(v)};\n" for k, v in data.items()) + SCRIPT
    page = (
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>featcache compare</title>'
        f"<style>{STYLE}</style></head><body>{''.join(body)}<script>{script}</script></body></html>"
    )
    path = out / REPORT_HTML
    path.write_text(page, encoding="utf-8")
    return path


def _e(text) -> str:
    return html.escape(str(text))


def _rows(report: dict) -> str:
    rows = report["rows"]
    dropped = report.get("leaks_dropped", 0)
    leaks = f", {dropped} leaking validation/test rows left out" if dropped else ""
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
            lines.append(f"<tr><th>{split} {key.replace('_', ' ')}</th>{values}</tr>")
    about = "".join(f"<li><b>{_e(m)}</b>: {_e(report['models'][m].get('description', ''))}</li>" for m in models)
    return f"<h2>Scores</h2><table>{head}{''.join(lines)}</table><ul>{about}</ul>"


def _figures(out: Path) -> str:
    found = [out / "metrics.png", out / "head" / "learning_curves.png"]
    images = [
        f'<img alt="{p.name}" style="max-width:100%" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}">'
        for p in found
        if p.is_file()
    ]
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
            f'<td class="cell{" diag" if t == p else ""}" onclick="show({json.dumps(model)},{t},{p})">'
            f"{len(cells[t][p])}</td>"
            for p in range(len(names))
        )
        rows.append(f"<tr><th>{_e(name)}</th>{tds}</tr>")
    return f"<h3>{_e(model)}</h3><table>{head}{''.join(rows)}</table>"


def _mistakes(run, split: str, y: np.ndarray, names: list[str], thumbs: list[str], paths: list[str]) -> str:
    """Per true class, the wrong predictions of ``run`` it was most sure of."""
    proba = run.proba[split]
    pred = np.argmax(proba, axis=1)
    parts = [f"<h2>Most confident mistakes of {_e(run.name)} on {split}</h2>"]
    for t, name in enumerate(names):
        wrong = np.flatnonzero((y == t) & (pred != t))
        wrong = wrong[np.argsort(-proba[wrong, pred[wrong]])][:MISTAKES_PER_CLASS]
        if not len(wrong):
            continue
        items = "".join(
            f'<div class="mistake"><img src="{thumbs[i]}" title="{_e(paths[i])}" alt="{_e(paths[i])}"><br>'
            f"{_e(names[pred[i]])} {proba[i, pred[i]]:.2f}</div>"
            for i in wrong.tolist()
        )
        parts.append(f"<h3>true {_e(name)}</h3><div class='gallery'>{items}</div>")
    return "".join(parts)


def _leaks(report: dict) -> str:
    if "with_leaks" not in report:
        return "<h2>Leaks</h2><p>Not checked: run <code>featcache leaks</code>, or compare with --drop-leaks.</p>"
    models = list(report["with_leaks"])
    cells = "".join(
        f"<li>{_e(m)}: {s} accuracy {report['with_leaks'][m][s]['accuracy']:.4f} with them</li>"
        for m in models
        for s in report["with_leaks"][m]
    )
    return f"<h2>Leaks</h2><p>{report['leaks_dropped']} leaking validation/test rows left out.</p><ul>{cells}</ul>"


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
    images = "".join(
        f'<img alt="{p.name}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">' for p in pngs
    )
    page = (
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>featcache sweep</title>'
        f"<style>{STYLE}</style></head><body><h1>featcache sweep</h1><table>{table}</table>{images}</body></html>"
    )
    path = out / REPORT_HTML
    path.write_text(page, encoding="utf-8")
    return path
