"""Metrics: surface distances, volumes and areas, correspondence error against ground truth."""

from shapeatlas.metrics.correspondence import correspondence_error, true_correspondence
from shapeatlas.metrics.surface import (
    ClosestPoints,
    SurfaceDistances,
    chamfer_distance,
    closest_points_on_surface,
    enclosed_volume_ml,
    hausdorff95,
    hausdorff_distance,
    mesh_surface_distances,
    point_to_surface_distance,
    surface_area,
    surface_distances,
    weighted_percentile,
)

__all__ = [
    "correspondence_error",
    "true_correspondence",
    "ClosestPoints",
    "SurfaceDistances",
    "chamfer_distance",
    "closest_points_on_surface",
    "enclosed_volume_ml",
    "hausdorff95",
    "hausdorff_distance",
    "mesh_surface_distances",
    "point_to_surface_distance",
    "surface_area",
    "surface_distances",
    "weighted_percentile",
]
