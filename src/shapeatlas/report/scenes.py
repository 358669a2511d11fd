"""Interactive 3D panels of the HTML report, as plotly figure dicts (no plotly import here).

A browser keeps about 16 WebGL contexts per page and plotly gives every 3D scene its own, so
the report never draws one scene per shape: each panel is a single scene holding several
shapes side by side on a grid, which all turn together with its camera. Every shape is shown
in one display frame, the principal axes of the model's mean shape (longest across, second
upwards, smallest towards the viewer); rotations only, so nothing is mirrored.

Arrays go into the figures as plotly's typed-array form (`{"dtype": "i2", "bdata": base64}`),
which plotly.js decodes itself, also inside slider steps. The coordinates of a panel only draw
it (its axes are hidden, and hovering shows names, not coordinates), so they are written as
16-bit integers in units of 1/`QUANTUM_RANGE` of the panel's largest coordinate: 0.04 mm for
a panel 2.4 m wide, far below a pixel, in a fraction of the bytes of JSON numbers. The slider
steps of the modes are most of a report's data, so this halves them against float32.

Shapes: `S` shapes in a panel, `K` atlas vertices, `V` vertices of one shape, `F` faces.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["Shape", "DisplayFrame", "modes_figure", "panel_figure", "matching_figure",
           "typed_array"]

#: Gap between neighbouring shapes of a panel, as a share of the largest shape's extent,
#: across and (with room for the labels) down.
PANEL_GAP = 0.3
ROW_GAP = 0.55
#: Shapes per row of a panel.
PANEL_COLUMNS = 4
#: Largest and smallest height of a panel's scene per row of shapes (px), of the labels above
#: them, and of a row of sliders.
ROW_HEIGHT_PX = 340
MIN_ROW_PX = 150
LABEL_PX = 30
SLIDER_ROW_PX = 90
#: Page width the panels are laid out for (px), the share of it the shapes fill, and the height
#: of plotly's orthographic view in aspect-ratio units (measured: 2.13).
ASSUMED_WIDTH_PX = 1100
FILL = 0.88
ORTHO_UNITS = 2.1
#: Where the camera looks from (plotly's eye, display frame): mostly along the smallest axis,
#: a little from above, so that the shapes' relief shows (from straight ahead, so that a row of
#: shapes stays level).
VIEW = {"x": 0.0, "y": -2.8, "z": 0.9}
#: Colours of the two kinds of shape (virtual: the PNG gallery's; real and atlas: blue-grey).
VIRTUAL_COLOUR = "#c98b7a"
REAL_COLOUR = "#7f9bbf"
ATLAS_COLOUR = "#9a9a9a"
LIGHTING = {"ambient": 0.45, "diffuse": 0.8, "specular": 0.15, "roughness": 0.6}
#: A light from behind the viewer, a little above and to the right; plotly places it in view
#: coordinates (x right, y up, -z towards the viewer), so it follows the camera.
LIGHT = {"x": 3e4, "y": 5e4, "z": -1e5}
#: A panel's largest |coordinate|, in its integer display units (int16 holds 32767).
QUANTUM_RANGE = 30000
_DTYPES = {"float32": "f4", "int16": "i2", "uint16": "u2", "int32": "i4"}


def typed_array(a: np.ndarray) -> dict:
    """plotly.js's typed-array form of a 1-D array: float -> float32, int16 as it is, other
    integers -> the smaller of uint16 / int32 that holds them."""
    a = np.asarray(a)
    if a.dtype.kind == "f":
        a = a.astype(np.float32)
    elif a.dtype != np.int16:
        a = a.astype(np.uint16 if a.size and 0 <= a.min() and a.max() < 2**16 else np.int32)
    a = np.ascontiguousarray(a).ravel()
    return {"dtype": _DTYPES[a.dtype.name], "bdata": base64.b64encode(a.tobytes()).decode()}


@dataclass(frozen=True)
class Shape:
    """One shape to draw. vertices: (V, 3) mm in the model's aligned frame; faces: (F, 3);
    label: the text above it; colour: a CSS colour, unless `values` (V,) colour it."""

    vertices: np.ndarray
    faces: np.ndarray
    label: str
    colour: str = REAL_COLOUR
    values: np.ndarray | None = None


class DisplayFrame:
    """The rotation that shows shapes along the principal axes of a reference shape.

    reference: (K, 3). x = its longest axis, z = the second, y = the smallest (depth)."""

    def __init__(self, reference: np.ndarray):
        ref = np.asarray(reference, dtype=np.float64)
        self.centre = ref.mean(axis=0)
        _, _, vt = np.linalg.svd(ref - self.centre, full_matrices=False)
        rot = vt[[0, 2, 1]]
        if np.linalg.det(rot) < 0:
            rot[1] = -rot[1]
        self.rotation = rot

    def __call__(self, vertices: np.ndarray) -> np.ndarray:
        """(..., 3) aligned frame -> display frame."""
        return (np.asarray(vertices, dtype=np.float64) - self.centre) @ self.rotation.T


def _grid(boxes: Sequence[tuple[np.ndarray, np.ndarray]], columns: int
          ) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (S, 3) that put each bounding box (lo, hi) at its cell of a grid in the x-z
    plane, filled row by row from the top left, and the cell size (3,)."""
    cell = np.max([hi - lo for lo, hi in boxes], axis=0) * (1 + np.array(
        [PANEL_GAP, PANEL_GAP, ROW_GAP]))
    offsets = []
    for i, (lo, hi) in enumerate(boxes):
        col, row = i % columns, i // columns
        target = np.array([col * cell[0], 0.0, -row * cell[2]])
        offsets.append(target - (lo + hi) / 2)
    return np.array(offsets), cell


def _faces(faces: np.ndarray) -> dict:
    f = np.asarray(faces)
    return {"i": typed_array(f[:, 0]), "j": typed_array(f[:, 1]), "k": typed_array(f[:, 2])}


def _quantum(arrays: Sequence[np.ndarray]) -> float:
    """The display unit (mm) of a panel whose placed coordinates are `arrays`."""
    return max(max(float(np.abs(a).max()) for a in arrays), 1e-9) / QUANTUM_RANGE


def _units(v: np.ndarray, quantum: float) -> np.ndarray:
    """Coordinates (mm) -> int16 display units."""
    return np.round(np.asarray(v) / quantum).astype(np.int16)


def _xyz(v: np.ndarray) -> dict:
    return {"x": typed_array(v[:, 0]), "y": typed_array(v[:, 1]), "z": typed_array(v[:, 2])}


def _trace(v: np.ndarray, shape: Shape) -> dict:
    t = {"type": "mesh3d", "name": shape.label, **_xyz(v), **_faces(shape.faces),
         "flatshading": False, "lighting": LIGHTING, "lightposition": LIGHT, "showscale": False,
         "hovertemplate": f"{_text(shape.label)}<extra></extra>"}
    if shape.values is None:
        t["color"] = shape.colour
    else:
        t["intensity"] = typed_array(shape.values)
    return t


def _view() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The camera's unit direction of view, right and up vectors (display frame)."""
    forward = -np.array([VIEW[k] for k in "xyz"], dtype=float)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    return forward, right, np.cross(right, forward)


def _projected(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, float, float]:
    """The box lo..hi's span (3,) (never 0) and its width and height as the camera sees it."""
    span = np.maximum(hi - lo, 1e-6 * max(float(np.max(hi - lo)), 1e-9))
    _, right, up = _view()
    corners = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)]) * span
    return span, float(np.ptp(corners @ right)), float(np.ptp(corners @ up))


def _scene_height(lo: np.ndarray, hi: np.ndarray, rows: int, width_share: float = 1.0) -> int:
    """Pixel height of a scene whose shapes span lo..hi (display frame): the height that the
    panel's proportions call for at the assumed page width, within limits per row."""
    _, wide, high = _projected(lo, hi)
    natural = ASSUMED_WIDTH_PX * width_share * high / wide
    return int(np.clip(natural, MIN_ROW_PX * rows, ROW_HEIGHT_PX * rows)) + LABEL_PX


def _scene(lo: np.ndarray, hi: np.ndarray, height_px: int, domain_y: tuple[float, float],
           width_share: float = 1.0) -> dict:
    """An orthographic scene seen from `VIEW` with z up, scaled so that the box lo..hi fills
    `FILL` of a canvas `height_px` high (less `LABEL_PX` for the labels above the shapes) and
    `width_share` of `ASSUMED_WIDTH_PX` wide. plotly's orthographic view shows `ORTHO_UNITS`
    aspect-ratio units of the canvas height, whatever the eye's distance, and the aspect
    ratio here is the data's, scaled."""
    axis = {"visible": False, "showspikes": False}
    span, wide, high = _projected(lo, hi)
    up = _view()[2]
    px_per_unit_height = height_px / ORTHO_UNITS  # pixels per aspect-ratio unit
    room_w = ASSUMED_WIDTH_PX * width_share / px_per_unit_height
    room_h = (height_px - LABEL_PX) / px_per_unit_height
    scale = FILL * min(room_w / wide, room_h / high)
    aspect = span * scale
    # Look a little above the shapes' centre, so that the labels above them fit.
    lift = LABEL_PX / 2 / px_per_unit_height
    return {"xaxis": axis, "yaxis": axis, "zaxis": axis, "aspectmode": "manual",
            "aspectratio": {"x": float(aspect[0]), "y": float(aspect[1]), "z": float(aspect[2])},
            "domain": {"x": [0, width_share], "y": list(domain_y)},
            "camera": {"eye": VIEW, "up": {"x": 0, "y": 0, "z": 1},
                       "center": {k: float(v) for k, v in zip("xyz", up * lift)},
                       "projection": {"type": "orthographic"}},
            "annotations": []}


def _text(label: str) -> str:
    """A label as plotly text: its markup (<b>, <a href>...) and template fields shown as
    they are, not interpreted (labels hold file names)."""
    return html.escape(label).replace("%{", "%&#123;")


def _label(scene: dict, text: str, lo: np.ndarray, hi: np.ndarray, offset: np.ndarray) -> None:
    top = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, hi[2]]) + offset
    scene["annotations"].append({"x": float(top[0]), "y": float(top[1]), "z": float(top[2]),
                                 "text": _text(text), "showarrow": False, "yshift": 14,
                                 "font": {"size": 12}})


#: Room for a figure's title above its scene (px).
TITLE_PX = 40


def _layout(title: str, height: int, scene: dict) -> dict:
    return {"title": {"text": title, "font": {"size": 14}}, "height": height,
            "margin": {"l": 0, "r": 0, "t": TITLE_PX, "b": 0}, "scene": scene,
            "showlegend": False, "paper_bgcolor": "white"}


def _bounds(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return (np.min([a.reshape(-1, 3).min(axis=0) for a in arrays], axis=0),
            np.max([a.reshape(-1, 3).max(axis=0) for a in arrays], axis=0))


def panel_figure(shapes: Sequence[Shape], frame: DisplayFrame, *, title: str,
                 columns: int = PANEL_COLUMNS, width_share: float = 1.0) -> dict:
    """One scene with `shapes` on a grid, each labelled, across `width_share` of the page."""
    verts = [frame(s.vertices) for s in shapes]
    boxes = [(v.min(axis=0), v.max(axis=0)) for v in verts]
    columns = max(1, min(columns, len(shapes)))
    offsets, _ = _grid(boxes, columns)
    rows = -(-len(shapes) // columns)
    placed = [v + off for v, off in zip(verts, offsets)]
    q = _quantum(placed)
    lo, hi = (b / q for b in _bounds(placed))
    scene_px = _scene_height(lo, hi, rows, width_share)
    scene = _scene(lo, hi, scene_px, (0.0, 1.0), width_share)
    traces = []
    for s, v, (b_lo, b_hi), off in zip(shapes, placed, boxes, offsets):
        traces.append(_trace(_units(v, q), s))
        _label(scene, s.label, b_lo / q, b_hi / q, off / q)
    return {"data": traces, "layout": _layout(title, TITLE_PX + scene_px, scene)}


def modes_figure(directions: Sequence[tuple[str, np.ndarray]], faces: np.ndarray,
                 frame: DisplayFrame, *, sd: np.ndarray, title: str) -> dict:
    """One shape per latent direction, each with its own slider through its steps.

    directions: (label, (T, K, 3) shapes from -2 to +2 sd); sd: (T,) the steps' positions in
    standard deviations. Every shape starts at the step nearest 0 sd; a slider restyles only
    its own shape, which morphs in place (its grid cell holds every step)."""
    n = len(directions)
    columns = max(1, min(PANEL_COLUMNS, n))
    rows = -(-n // columns)
    mid = int(np.argmin(np.abs(sd)))
    steps = [frame(s) for _, s in directions]  # (T, K, 3) each
    boxes = [(s.min(axis=(0, 1)), s.max(axis=(0, 1))) for s in steps]
    offsets, _ = _grid(boxes, columns)
    q = _quantum([s + off for s, off in zip(steps, offsets)])
    lo, hi = (b / q for b in _bounds([s + off for s, off in zip(steps, offsets)]))
    scene_px = _scene_height(lo, hi, rows)
    slider_px = SLIDER_ROW_PX * rows
    height = TITLE_PX + scene_px + slider_px
    paper = scene_px + slider_px
    scene = _scene(lo, hi, scene_px, (slider_px / paper, 1.0))
    traces, sliders = [], []
    for r, ((label, _), s, (b_lo, b_hi), off) in enumerate(
            zip(directions, steps, boxes, offsets)):
        traces.append(_trace(_units(s[mid] + off, q),
                             Shape(s[mid], faces, label, colour=VIRTUAL_COLOUR)))
        _label(scene, label, b_lo / q, b_hi / q, off / q)
        col, row = r % columns, r // columns
        sliders.append({
            "active": mid, "x": col / columns + 0.01, "len": 1 / columns - 0.02,
            "y": (slider_px - row * SLIDER_ROW_PX) / paper, "yanchor": "top",
            "pad": {"t": 30, "b": 0}, "font": {"size": 10}, "name": label,
            "currentvalue": {"prefix": f"{label}: ", "suffix": " sd", "font": {"size": 12}},
            "steps": [{"method": "restyle", "label": f"{x:+.1f}".replace("+0.0", "0"),
                       "args": [_xyz(_units(v + off, q)), [r]]} for x, v in zip(sd, s)],
        })
    layout = _layout(title, height, scene)
    layout["sliders"] = sliders
    return {"data": traces, "layout": layout}


#: Share of the matching panel's width kept for its colour bar.
COLOURBAR_SHARE = 0.12
#: The two colourings of the matching panel: values key, colour scale, bar title, hover.
COLOURINGS = (
    ("error", "Reds", "matching error (mm)", "%{intensity:.2f} mm"),
    ("confidence", "Viridis", "confidence", "confidence %{intensity:.3f}"),
)


def matching_figure(shapes: Sequence[Shape], values: Sequence[dict[str, np.ndarray]],
                    frame: DisplayFrame, *, title: str, limits: dict[str, tuple[float, float]]
                    ) -> dict:
    """Matched shapes (and the atlas with their per-vertex means) coloured by matching error,
    with buttons that switch every shape to confidence and back.

    values: per shape, {"error": (K,), "confidence": (K,)}; limits: the colour range of each."""
    first = COLOURINGS[0][0]
    fig = panel_figure([Shape(s.vertices, s.faces, s.label, values=v[first])
                        for s, v in zip(shapes, values)], frame, title=title,
                       width_share=1 - COLOURBAR_SHARE)
    n = len(shapes)

    def style(key: str, scale: str, bar: str, hover: str) -> dict:
        lo, hi = limits[key]
        return {"intensity": [typed_array(v[key]) for v in values],
                "colorscale": [scale] * n, "cmin": [lo] * n, "cmax": [hi] * n,
                "showscale": [i == n - 1 for i in range(n)],
                "colorbar": [{"title": {"text": bar, "side": "right"}, "len": 0.9,
                              "x": 1 - COLOURBAR_SHARE + 0.02, "xanchor": "left"}] * n,
                "hovertemplate": [f"{_text(s.label)}: {hover}<extra></extra>"
                                  for s in shapes]}

    for i, t in enumerate(fig["data"]):
        for k, v in style(*COLOURINGS[0]).items():
            t[k] = v[i]
    fig["layout"]["updatemenus"] = [{
        "type": "buttons", "direction": "right", "x": 0.0, "y": 1.0, "xanchor": "left",
        "yanchor": "bottom", "pad": {"t": 0, "b": 4}, "showactive": True, "active": 0,
        "buttons": [{"label": bar, "method": "restyle",
                     "args": [style(key, scale, bar, hover), list(range(n))]}
                    for key, scale, bar, hover in COLOURINGS]}]
    fig["layout"]["margin"]["t"] += 30
    fig["layout"]["height"] += 30
    return fig
