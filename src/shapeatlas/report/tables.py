"""The HTML report's tables and style sheet: settings, data, timings and the evaluation's
figures, from a run folder's JSON files and an evaluation's metrics.json. Every value read
from a file is escaped."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Iterator, Sequence

from shapeatlas.training.config import FitConfig

__all__ = ["STYLE", "data", "evaluation_matching", "evaluation_summary", "settings", "table",
           "timings"]

#: Longer lists of training shapes are folded away.
OPEN_LISTING = 20

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;
max-width:1200px;padding:0 24px 40px;color:#222;line-height:1.45}
header{border-bottom:1px solid #ddd;margin-bottom:8px}h1{font-size:1.6em;margin:18px 0 4px}
h2{font-size:1.25em;margin:28px 0 8px;border-bottom:1px solid #eee}h3{font-size:1.05em}
nav a{color:#2a5d9f;text-decoration:none}nav{margin:6px 0 12px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:0.9em}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.section td{background:#fafafa;font-weight:600}td.changed{font-weight:600}
code,pre{background:#f5f5f5;border-radius:3px;padding:1px 4px}pre{padding:8px}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(440px,1fr));gap:12px}
.grid>div{min-width:0}.grid.narrow{grid-template-columns:repeat(auto-fill,minmax(330px,1fr))}
.grid h3{margin:6px 0 0}
footer{margin-top:32px;color:#666;font-size:0.9em}
"""


def _cell(value: Any) -> str:
    text = html.escape(str(value))
    numeric = isinstance(value, (int, float)) or text.replace(".", "", 1).lstrip("-").isdigit()
    return f'<td class="num">{text}</td>' if numeric else f"<td>{text}</td>"


def table(head: Sequence[str] | None, rows: Sequence[Sequence[Any]]) -> str:
    """A plain table (no header row for `head` None); every cell escaped."""
    h = "" if head is None else "<thead><tr>" + "".join(
        f"<th>{html.escape(str(c))}</th>" for c in head) + "</tr></thead>"
    body = "".join("<tr>" + "".join(_cell(c) for c in r) + "</tr>" for r in rows)
    return f"<table>{h}<tbody>{body}</tbody></table>"


def _flat(d: dict, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flat(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def _shown(v: Any) -> str:
    if isinstance(v, list):
        return ", ".join(_shown(x) for x in v) if v else "none"
    return "unset" if v is None else json.dumps(v)


def settings(config: dict) -> str:
    """The run's config.json, one small table per section, one row per field; a field that
    differs from this version's default is in bold, with the default beside it."""
    defaults = FitConfig().to_dict()
    top = {k: v for k, v in config.items() if not isinstance(v, dict)
           and k not in ("format", "version")}
    sections = [("top level", top, defaults)] + [
        (k, v, defaults.get(k, {})) for k, v in config.items() if isinstance(v, dict)]
    parts = []
    for title, fields, base in sections:
        flat_base = dict(_flat(base)) if isinstance(base, dict) else {}
        rows = []
        for name, value in _flat(fields):
            changed = name in flat_base and flat_base[name] != value
            rows.append(f"<tr><td><code>{html.escape(name)}</code></td>"
                        f'<td{" class=changed" if changed else ""}>{html.escape(_shown(value))}'
                        "</td><td>"
                        + (html.escape(_shown(flat_base[name])) if changed else "")
                        + "</td></tr>")
        parts.append(f"<div><h3>{html.escape(title)}</h3><table><thead><tr><th>field</th>"
                     f"<th>value</th><th>default</th></tr></thead><tbody>{''.join(rows)}"
                     "</tbody></table></div>")
    return ("<p>The run's <code>config.json</code> (reusable with <code>shapeatlas fit "
            "--config</code>); fields that differ from this version's defaults are in bold, "
            "with the default beside them. Every field is described in "
            "<code>docs/configuration.md</code>.</p>"
            f'<div class="grid narrow">{"".join(parts)}</div>')


def _num(x: Any, fmt: str = ".2f") -> str:
    return format(x, fmt) if isinstance(x, (int, float)) else "—"


def data(run) -> str:
    """The training cohort: its source, size and names, with each shape's matching in the fit,
    and what fitted the run (provenance.json)."""
    fit = run.fit_metrics
    info = fit.get("data") if isinstance(fit.get("data"), dict) else {}
    rows = [["training shapes", fit.get("n_shapes")],
            ["data folder", info.get("data", "—")],
            ["groomed by fit", "yes (into RUN/groomed)" if info.get("groomed_by_fit") else "no"],
            ["atlas initialised from", Path(str(fit.get("atlas_init", "—"))).name]]
    prov = run.provenance or {}
    for key, label in (("date", "fitted on"), ("shapeatlas", "fitted by shapeatlas"),
                       ("python", "Python"), ("torch", "torch"), ("device", "device"),
                       ("command", "command")):
        if prov.get(key) is not None:
            rows.append([label, prov[key]])
    per_shape = fit.get("per_shape") if isinstance(fit.get("per_shape"), dict) else {}
    labels = fit.get("atlases", {}).get("labels", {}) if isinstance(fit.get("atlases"),
                                                                    dict) else {}
    head = ["shape", "Chamfer in the fit (mm)", "Hausdorff in the fit (mm)"] + (
        ["atlas"] if labels else [])
    shapes = [[name, _num(d.get("chamfer_mm")), _num(d.get("hausdorff_mm"))]
              + ([labels.get(name, "—")] if labels else [])
              for name, d in per_shape.items() if isinstance(d, dict)]
    listing = table(head, shapes)
    if len(shapes) > OPEN_LISTING:
        listing = f"<details><summary>show the {len(shapes)} shapes</summary>{listing}</details>"
    return (table(None, rows)
            + f"<h3>The {len(shapes)} training shapes</h3>"
            + "<p>Each shape's symmetric Chamfer and Hausdorff distances between its mesh and "
              "its matched points at the end of the fit.</p>" + listing)


def timings(run, evaluation, report_seconds: dict[str, float]) -> str:
    """Seconds spent by the fit (fit_metrics.json), the evaluation and this report."""
    fit = run.fit_metrics
    rows = [["fit: total", _num(fit.get("fit_seconds"), ".1f")],
            ["fit: correspondence network", _num(fit.get("correspondence_seconds"), ".1f")],
            ["fit: shape generator", _num(fit.get("generator_seconds"), ".1f")],
            ["fit: epochs run", fit.get("epochs_run", "—")],
            ["fit: shapes per second per epoch",
             _num(fit.get("shapes_per_second_per_epoch"), ".1f")],
            ["fit: device", fit.get("device", "—")]]
    pm = fit.get("point_model")
    if isinstance(pm, dict) and "seconds" in pm:
        rows.append(["fit: point-distribution model", _num(pm["seconds"], ".1f")])
    if evaluation is not None:
        m = evaluation.metrics
        rows += [["evaluation: matching per test shape",
                  _num(m.get("matching", {}).get("seconds_per_shape"), ".2f")],
                 ["evaluation: sampling the virtual shapes", _num(m.get("sampling_seconds"),
                                                                 ".2f")]]
    rows += [[f"this report: {k}", _num(v, ".2f")] for k, v in report_seconds.items()]
    return table(["stage", "seconds"], rows)


def _pm(d: Any, a: str, b: str, unit: str = "") -> str:
    if not isinstance(d, dict) or not isinstance(d.get(a), (int, float)):
        return "—"
    return f"{d[a]:.2f} ± {_num(d.get(b))}{unit}"


def evaluation_summary(m: dict) -> str:
    """The evaluation's figures in one table (definitions in docs/metrics.md)."""
    mt, sp, pl = m.get("matching", {}), m.get("specificity_mm", {}), m.get("plausibility", {})
    g = m["generalization_mm"][-1]
    val = pl.get("validity", {})
    rows = [
        ["matching: Chamfer (mean ± SE)", _pm(mt.get("chamfer_mm"), "mean", "se", " mm")],
        ["matching: Hausdorff (mean ± SE)", _pm(mt.get("hausdorff_mm"), "mean", "se", " mm")],
        ["matching: HD95 (mean ± SE)", _pm(mt.get("hd95_mm"), "mean", "se", " mm")],
        [f"generalization, {g['components']} directions (mean ± SE)",
         _pm(g, "mean", "se", " mm")],
        ["specificity, vertex (mean ± SE)", _pm(sp, "vertex_mean", "vertex_se", " mm")],
        ["specificity, surface (mean ± SE)", _pm(sp, "surface_mean", "surface_se", " mm")],
        ["volume: real training shapes (mean ± sd)", _pm(pl.get("real_volume_ml"), "mean",
                                                         "sd", " mL")],
        ["volume: test shapes (mean ± sd)", _pm(m.get("test_volume_ml"), "mean", "sd", " mL")],
        ["volume: virtual shapes (mean ± sd)", _pm(pl.get("virtual_volume_ml"), "mean", "sd",
                                                   " mL")],
        ["volume: KS statistic, real vs virtual", _num(pl.get("volume_ks"), ".3f")],
        ["volume: Wasserstein distance", _num(pl.get("volume_wasserstein_ml"), ".2f") + " mL"],
        ["acceptance rate", _num(pl.get("acceptance_rate"), ".3f")],
        ["valid virtual shapes (share)", _num(val.get("valid"), ".3f")],
    ]
    out = table(["figure", "value"], rows)
    clusters = m.get("clusters")
    if isinstance(clusters, list) and clusters:
        out += "<h3>Per atlas</h3>" + table(
            ["atlas", "weight", "training", "test", "samples", "specificity (mm)",
             "generalization (mm)"],
            [[c.get("atlas"), _num(c.get("weight"), ".3f"), c.get("n_train"), c.get("n_test"),
              c.get("n_samples"), _pm(c.get("specificity_mm"), "vertex_mean", "vertex_se"),
              _pm(c.get("generalization_mm"), "mean", "se")] for c in clusters])
    return out


def evaluation_matching(m: dict) -> str:
    """Each test shape's matching distances."""
    rows = [[Path(str(r["name"])).stem, _num(r["chamfer_mm"]), _num(r["hausdorff_mm"]),
             _num(r["hd95_mm"])] for r in m["matching"]["per_shape"]]
    return table(["test shape", "Chamfer (mm)", "Hausdorff (mm)", "HD95 (mm)"], rows)
