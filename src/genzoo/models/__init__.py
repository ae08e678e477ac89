"""Models: each a ``GenerativeModel`` (a LightningModule) that samples and may give a likelihood."""

from genzoo.models.base import GenerativeModel
from genzoo.models.gated_pixelcnn import GatedPixelCNN
from genzoo.models.pixelcnn import PixelCNN

__all__ = ["GatedPixelCNN", "GenerativeModel", "PixelCNN"]
