"""Datamodules: every dataset yields discrete images ``(x uint8 (B, C, H, W), y int64 (B,))``."""

from genzoo.data.base import ArrayDataset, ImageDataModule
from genzoo.data.binarized import BinarizedMNISTDataModule
from genzoo.data.celeba import CelebADataModule
from genzoo.data.cifar import CIFAR10DataModule
from genzoo.data.digits import DigitsDataModule
from genzoo.data.folder import FolderDataModule
from genzoo.data.mnist import FashionMNISTDataModule, MNISTDataModule
from genzoo.data.patches import PatchesDataModule
from genzoo.data.svhn import SVHNDataModule

__all__ = [
    "ArrayDataset",
    "BinarizedMNISTDataModule",
    "CIFAR10DataModule",
    "CelebADataModule",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "FolderDataModule",
    "ImageDataModule",
    "MNISTDataModule",
    "PatchesDataModule",
    "SVHNDataModule",
]
