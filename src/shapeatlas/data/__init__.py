"""Cohorts: synthetic cohorts with ground truth (more: cohorts on disk, batching)."""

from __future__ import annotations

from pathlib import Path

from shapeatlas import validate
from shapeatlas.data.synthetic_kidney import load_kidney_truth, write_kidney_cohort
from shapeatlas.data.synthetic_lv import load_truth, lv_surface, write_lv_cohort
from shapeatlas.errors import ShapeAtlasError

__all__ = ["load_cohort_truth", "load_kidney_truth", "load_truth", "lv_surface",
           "write_kidney_cohort", "write_lv_cohort"]


def load_cohort_truth(directory: str | Path) -> dict:
    """The ground truth of any synthetic cohort (LV or kidney), by the generator its truth.json
    names: shape name -> truth record (`domain`, `faces`, `vertices_file`, `long_axis_mm`)."""

    index = Path(directory) / "truth.json"
    if not index.is_file():
        raise ShapeAtlasError(f"{index}: cannot read a synthetic cohort's truth (no such file)")
    generator = validate.mapping(validate.read_json(index), index).get("generator")
    loaders = {"shapeatlas.data.synthetic_lv": load_truth,
               "shapeatlas.data.synthetic_kidney": load_kidney_truth}
    if generator not in loaders:
        raise ShapeAtlasError(f"{index}: unknown generator {generator!r}; expected one of "
                              f"{sorted(loaders)}")
    return loaders[generator](directory)
