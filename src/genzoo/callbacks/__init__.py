"""Callbacks written once for every model: sample grids, the run folder's metric files."""

from genzoo.callbacks.metrics_file import MetricsFile
from genzoo.callbacks.sample_grid import SampleGrid

__all__ = ["MetricsFile", "SampleGrid"]
