"""Datamodules: every dataset yields discrete images ``(x uint8 (B, C, H, W), y int64 (B,))``."""

from genzoo.data.base import ArrayDataset, ImageDataModule
from genzoo.data.digits import DigitsDataModule

__all__ = ["ArrayDataset", "DigitsDataModule", "ImageDataModule"]
