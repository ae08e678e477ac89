"""Models: each a ``GenerativeModel`` (a LightningModule) that samples and may give a likelihood."""

from genzoo.models.autoencoder import Autoencoder
from genzoo.models.base import GenerativeModel
from genzoo.models.dcgan import DCGAN
from genzoo.models.diagonal_bilstm import DiagonalBiLSTM
from genzoo.models.gated_pixelcnn import GatedPixelCNN
from genzoo.models.pixelcnn import PixelCNN
from genzoo.models.pixelcnn_pp import PixelCNNPP
from genzoo.models.row_lstm import RowLSTM
from genzoo.models.vae import VAE
from genzoo.models.vqvae import VQVAE
from genzoo.models.vqvae_prior import VQVAEPrior

__all__ = ["Autoencoder", "DCGAN", "DiagonalBiLSTM", "GatedPixelCNN", "GenerativeModel", "PixelCNN", "PixelCNNPP", "RowLSTM", "VAE", "VQVAE",
           "VQVAEPrior"]
