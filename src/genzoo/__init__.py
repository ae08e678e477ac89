"""genzoo: train, evaluate and compare deep generative models of images with one command."""

from genzoo.errors import GenzooError

__version__ = "0.1.0"
__all__ = ["GenzooError", "__version__"]
