"""Cohorts: synthetic cohorts with ground truth (more: cohorts on disk, batching)."""

from shapeatlas.data.synthetic_lv import load_truth, lv_surface, write_lv_cohort

__all__ = ["load_truth", "lv_surface", "write_lv_cohort"]
