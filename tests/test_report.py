"""`shapeatlas report`: the HTML page of a tiny run, its contents, its refusals, and the page
itself in a real headless browser (offline, no console error, drawn, sliders that morph)."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import time

import numpy as np
import pytest
import trimesh

from shapeatlas.cli import main
from shapeatlas.errors import ShapeAtlasError
from shapeatlas.mesh.core import Mesh
from shapeatlas.report.content import matching_error
from shapeatlas.report.html import MAX_DIRECTIONS, TRAVERSE_STEPS, write_report
from shapeatlas.report.scenes import typed_array

SECTIONS = ["atlas", "modes", "gallery", "matching", "evaluation", "settings", "data", "timings"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A tiny fitted run (5 synthetic LVs, 150 atlas vertices, 1 epoch), its evaluation on 2
    new LVs, and the report of each: with and without the evaluation."""
    import torch

    from shapeatlas.data.synthetic_lv import write_lv_cohort
    from shapeatlas.nn.encoder import EncoderConfig
    from shapeatlas.runs.evaluate import evaluate_run
    from shapeatlas.runs.fit import fit_run
    from shapeatlas.training.config import FitConfig

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("report")
    write_lv_cohort(root / "lv", n=5, seed=0, n_vertices=(1000, 1100))
    write_lv_cohort(root / "test", n=2, seed=1, n_vertices=(1000, 1100))
    cfg = FitConfig(model={"encoder": EncoderConfig(widths=(16, 16), heads=2, latent_dim=16),
                           "atlas_vertices": 150},
                    training={"epochs": 1, "atlas_rounds": 1}, matching={"refine_steps": 3},
                    grooming={"target_vertices": 400}, generator={"epochs": 200},
                    device="cpu")
    fit_run(root / "lv", root / "run", cfg)
    evaluate_run(root / "run", root / "test", root / "eval", n_samples=20, device="cpu")
    before = sorted(p.relative_to(root) for p in (root / "run").rglob("*"))
    t0 = time.perf_counter()
    full = write_report(root / "run", root / "out" / "report.html", evaluation=root / "eval",
                        device="cpu")
    seconds = time.perf_counter() - t0
    bare = write_report(root / "run", root / "bare.html", n_samples=2, device="cpu")
    assert sorted(p.relative_to(root) for p in (root / "run").rglob("*")) == before
    return {"root": root, "full": full, "bare": bare, "seconds": seconds,
            "html": (root / "out" / "report.html").read_text(encoding="utf-8"),
            "bare_html": (root / "bare.html").read_text(encoding="utf-8")}


def _figure(page: str, div_id: str) -> tuple[list, dict]:
    """(data, layout) of the plotly figure drawn into `div_id`, read back from the page."""
    m = re.search(r'Plotly\.newPlot\(\s*"' + re.escape(div_id) + r'",\s*', page)
    assert m, f"no figure {div_id}"
    dec = json.JSONDecoder()
    data, end = dec.raw_decode(page, m.end())
    layout, _ = dec.raw_decode(page, page.index("{", end))
    return data, layout


def test_page_is_self_contained(built):
    page = built["html"]
    from plotly.offline import get_plotlyjs

    assert page.count(get_plotlyjs()[:2000]) == 1  # plotly.js inlined once
    # Nothing a browser would fetch: no external script, style sheet, image or frame, and a
    # policy that forbids every request.
    # (the markup, not the text of the inline scripts: plotly.js holds URLs in its strings)
    markup = re.sub(r"(<script\b[^>]*>).*?</script>", r"\1</script>", page, flags=re.S)
    assert markup.count("<script") == 1 + 8  # plotly.js and one script per figure
    tags = re.findall(r"<(?:script|link|img|iframe|source|embed|object)\b[^>]*>", markup)
    assert not [t for t in tags if re.search(r"\b(?:src|href|data)\s*=", t)]
    assert not re.search(r"""\s(?:src|href|action)\s*=\s*["']?\s*(?:[a-z]+:)?//""", markup)
    assert "http-equiv=\"Content-Security-Policy\" content=\"default-src 'none';" in page
    # A few MB: plotly.js (4.8 MB) and the figures.
    assert 4.5e6 < built["full"]["bytes"] < 8e6
    assert built["full"]["bytes"] == (built["root"] / "out" / "report.html").stat().st_size


def test_page_holds_every_section_and_a_slider_per_direction(built):
    page, s = built["html"], built["full"]
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in page
    assert s["sections"] == SECTIONS and s["evaluation"]
    d = s["latent_dim"]
    assert d == 4 and s["directions"] == min(d, MAX_DIRECTIONS) == s["sliders"]
    data, layout = _figure(page, "modes-figure")
    assert len(data) == len(layout["sliders"]) == s["directions"]
    for r, slider in enumerate(layout["sliders"]):
        assert len(slider["steps"]) == TRAVERSE_STEPS
        assert slider["active"] == TRAVERSE_STEPS // 2  # starts at 0 sd
        assert all(st["method"] == "restyle" and st["args"][1] == [r] for st in slider["steps"])
        # the steps move the shape: -2 sd and +2 sd differ
        xs = [st["args"][0]["x"] for st in slider["steps"]]
        assert {x["dtype"] for x in xs} == {"i2"}  # 16-bit display units
        first, last = (np.frombuffer(base64.b64decode(x["bdata"]), np.int16)
                       for x in (xs[0], xs[-1]))
        assert len(first) == 150 and np.abs(first.astype(int) - last).max() > 10
    # the gallery: 4 virtual shapes above 4 real ones, each labelled with its volume
    data, layout = _figure(page, "gallery-figure")
    labels = [a["text"] for a in layout["scene"]["annotations"]]
    assert len(data) == 8 and all(re.search(r": \d+ mL$", t) for t in labels)
    assert all(t.startswith(f"virtual {i + 1}: ") for i, t in enumerate(labels[:4]))
    assert [t.split(":")[0] for t in labels[4:]] == ["lv_000", "lv_001", "lv_002", "lv_003"]
    # the matching panel: the 2 test shapes and the atlas, two colourings
    data, layout = _figure(page, "matching-figure")
    assert s["matched"] == ["lv_000", "lv_001"] and len(data) == 3
    assert [b["label"] for b in layout["updatemenus"][0]["buttons"]] == [
        "matching error (mm)", "confidence"]
    for div in ("atlas-figure", "compactness-figure", "generalization-figure",
                "specificity-figure", "volumes-figure"):
        _figure(page, div)
    assert "test shapes of the evaluation" in page and "config.json" in page
    assert "<code>encoder.widths</code>" in page and "fit: total" in page


def test_report_without_evaluation(built):
    page, s = built["bare_html"], built["bare"]
    assert not s["evaluation"] and "compactness-figure" not in page
    assert "shapeatlas evaluate RUN --test DIR --out EVAL" in page
    assert "--evaluation EVAL" in page
    # training shapes are matched instead, from their pose in the fit
    assert s["matched"] == ["lv_000", "lv_001", "lv_002"] and "training shapes" in page
    assert len(_figure(page, "gallery-figure")[0]) == 4


def test_report_of_a_run_whose_meshes_are_gone(built, tmp_path):
    """A run folder sent on its own: the gallery shows the model's normalised shapes and the
    matching section says why it is empty."""
    run = tmp_path / "run"
    shutil.copytree(built["root"] / "run", run, ignore=shutil.ignore_patterns("groomed"))
    s = write_report(run, tmp_path / "r.html", device="cpu")
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert s["matched"] == [] and "No shape could be matched here" in page
    assert "normalised training shapes (the groomed meshes are not at hand)" in page
    labels = [a["text"] for a in _figure(page, "gallery-figure")[1]["scene"]["annotations"]]
    assert [t.split(":")[0] for t in labels[4:]] == ["lv_000", "lv_001", "lv_002", "lv_003"]


def test_report_is_quick(built):
    assert built["seconds"] < 20, built["full"]["seconds"]


def test_matching_error_on_a_sphere():
    t = trimesh.creation.icosphere(subdivisions=2, radius=20.0)
    sphere = Mesh(t.vertices, t.faces)
    assert np.abs(matching_error(sphere.vertices, sphere.faces, sphere)).max() < 1e-9
    # matched 2 mm outside: every atlas vertex is about 2 mm off (the surface between the
    # vertices lies a little inside the sphere, so a little more)
    err = matching_error(sphere.vertices * 1.1, sphere.faces, sphere)
    assert 2.0 <= err.min() and err.max() < 2.3


def test_typed_array_round_trips():
    a = typed_array(np.array([1.5, -2.25]))
    assert a["dtype"] == "f4"
    assert np.frombuffer(base64.b64decode(a["bdata"]), np.float32).tolist() == [1.5, -2.25]
    f = typed_array(np.array([0, 3, 65535]))
    assert f["dtype"] == "u2" and typed_array(np.array([0, 70000]))["dtype"] == "i4"
    assert typed_array(np.array([-3, 4], dtype=np.int16))["dtype"] == "i2"


def test_refusals(built, tmp_path):
    root = built["root"]
    out = root / "out" / "report.html"
    with pytest.raises(ShapeAtlasError, match="already exists: pass --overwrite"):
        write_report(root / "run", out)
    with pytest.raises(ShapeAtlasError, match="lies inside the input folder"):
        write_report(root / "run", root / "run" / "r.html")
    with pytest.raises(ShapeAtlasError, match="lies inside the input folder"):
        write_report(root / "run", root / "eval" / "r.html", evaluation=root / "eval")
    with pytest.raises(ShapeAtlasError, match="is a folder"):
        write_report(root / "run", tmp_path)
    with pytest.raises(ShapeAtlasError, match="from 1 to 8"):
        write_report(root / "run", tmp_path / "r.html", n_samples=9)
    with pytest.raises(ShapeAtlasError, match="no metrics.json"):
        write_report(root / "run", tmp_path / "r.html", evaluation=root / "run")
    with pytest.raises(ShapeAtlasError, match="no config.json"):
        write_report(root / "eval", tmp_path / "r.html")
    assert not list(tmp_path.iterdir())  # nothing left behind


def test_cli(built, tmp_path, capsys):
    root = built["root"]
    out = tmp_path / "r.html"
    assert main(["report", str(root / "run"), "--out", str(out), "-n", "1",
                 "--device", "cpu", "-q"]) == 0
    printed = capsys.readouterr().out
    assert "wrote" in printed and "4 of 4 latent directions" in printed
    assert "no evaluation" in printed and out.stat().st_size > 4e6
    assert main(["report", str(root / "run"), "--out", str(out), "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pass --overwrite" in err
    assert main(["report", str(root / "run"), "--out", str(out), "--overwrite", "-q",
                 "--evaluation", str(root / "eval"), "--device", "cpu"]) == 0
    assert "the evaluation" in capsys.readouterr().out
    with pytest.raises(SystemExit) as ex:
        main(["report", str(root / "run"), "--out", str(out), "-n", "9"])
    assert ex.value.code == 2 and "from 1 to 8" in capsys.readouterr().err


# ------------------------------------------------------------------------- in a browser
def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    return None


def _pixels(png: bytes) -> np.ndarray:
    import matplotlib.image

    return matplotlib.image.imread(io.BytesIO(png), format="png")[..., :3]


def _drawn(png: bytes) -> int:
    """Pixels that are not the white background."""
    return int((_pixels(png).min(axis=-1) < 0.9).sum())


def test_page_in_a_headless_browser(request):
    """The page opens offline in chromium with no console error and no request; the 3D
    panels are drawn; a slider morphs its shape; the matching panel switches colouring."""
    binary = _chromium()
    if binary is None:
        pytest.skip("no chromium binary found (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed "
                                   "(pip install playwright)")
    built = request.getfixturevalue("built")  # (only once the browser is known to be there)
    url = (built["root"] / "out" / "report.html").resolve().as_uri()
    errors, requests = [], []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=binary, args=[
            "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: None if r.url == url else requests.append(r.url))
            page.route(lambda u: u != url, lambda route: route.abort())
            page.goto(url, timeout=120_000)
            # (functions, not expressions: the page's policy forbids the eval of a string)
            page.wait_for_function("() => [...document.querySelectorAll('.plotly-graph-div')]"
                                   ".every(d => d._fullLayout)", timeout=120_000)
            # one WebGL canvas per 3D panel, none lost
            lost = page.evaluate("() => [...document.querySelectorAll('canvas')].filter(c => "
                                 "c.getContext('webgl')).map(c => c.getContext('webgl')"
                                 ".isContextLost())")
            assert lost == [False] * 4
            atlas = page.locator("#atlas-figure")
            atlas.scroll_into_view_if_needed()
            assert _drawn(atlas.screenshot()) > 20_000

            modes = page.locator("#modes-figure")
            modes.scroll_into_view_if_needed()
            x = "() => Array.from(document.getElementById('modes-figure')._fullData[0].x)"
            other = x.replace("_fullData[0]", "_fullData[1]")
            before_x, before_other = page.evaluate(x), page.evaluate(other)
            before = modes.screenshot()
            rail = page.locator("#modes-figure .slider-rail-touch-rect").first.bounding_box()
            page.mouse.click(rail["x"] + rail["width"] * 0.99, rail["y"] + rail["height"] / 2)
            page.wait_for_function(f"() => ({x})()[0] !== {before_x[0]}", timeout=30_000)
            after_x = page.evaluate(x)
            assert np.abs(np.subtract(after_x, before_x)).max() > 0.01
            page.wait_for_timeout(500)
            changed = np.abs(_pixels(modes.screenshot()) - _pixels(before)).max(axis=-1) > 0.1
            assert changed.sum() > 200
            assert page.evaluate(other) == before_other  # the other shapes stay

            matching = page.locator("#matching-figure")
            matching.scroll_into_view_if_needed()
            matching.locator(".updatemenu-button").nth(1).click()
            page.wait_for_function("() => document.getElementById('matching-figure')"
                                   ".data[0].colorscale === 'Viridis'", timeout=30_000)
        finally:
            browser.close()
    assert errors == [] and requests == []
