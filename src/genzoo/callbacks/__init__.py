"""Callbacks written once for every model: sample grids, the run folder's metric files, pictures of a code space,
the linear probe of an encoder and sample-quality metrics (FID, IS, KID, precision/recall)."""

from genzoo.callbacks.fidelity import Fidelity
from genzoo.callbacks.latent_pictures import LatentPictures
from genzoo.callbacks.linear_probe import LinearProbe
from genzoo.callbacks.metrics_file import MetricsFile
from genzoo.callbacks.sample_grid import SampleGrid

__all__ = ["Fidelity", "LatentPictures", "LinearProbe", "MetricsFile", "SampleGrid"]
