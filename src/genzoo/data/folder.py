"""Any folder of images (``data.root``): PNG, JPEG and the other formats PIL reads, grey or RGB, 256 levels.

When ``data.root`` has sub-folders, each is a class (torchvision's ``ImageFolder`` layout, images found by its
``make_dataset``) and ``data.num_classes`` must say how many; otherwise every image in ``data.root`` itself is used,
unlabelled. Each image is converted to grey (``data.channels=1``) or RGB (``3``), its shorter side resized to
``data.image_size`` (antialiased) and centre-cropped to a square. Val and test are fractions of the images held out
by ``split_seed``. Left out: alpha channels (dropped by the conversion) and 16-bit images (reduced to 8 bits by PIL).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, has_file_allowed_extension, make_dataset
from torchvision.transforms import v2

from genzoo.data.disk import DiskDataModule
from genzoo.errors import GenzooError


class FolderDataModule(DiskDataModule):
    NAME, TITLE, LEVELS = "folder", "image folder", 256

    def __init__(self, *args, root: str | None = None, image_size: int = 64, channels: int = 3,
                 val_fraction: float = 0.05, test_fraction: float = 0.05, **kwargs):
        if not root:
            raise GenzooError("data=folder needs the folder of images: set data.root=PATH.")
        self.root, self.image_size, self.channels = Path(root).expanduser().resolve(), int(image_size), int(channels)
        self.fractions = {"val": float(val_fraction), "test": float(test_fraction)}
        if self.channels not in (1, 3):
            raise GenzooError(f"data.channels={channels} is neither grey nor RGB: set data.channels=1 or 3.")
        if not all(0 < f < 0.5 for f in self.fractions.values()):
            raise GenzooError(f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} must each "
                              "lie between 0 and 0.5: choose fractions such as 0.05.")
        super().__init__(*args, **kwargs)

    def validate(self) -> None:
        want = (self.channels, self.image_size, self.image_size)
        if self.shape != want:
            raise GenzooError(f"data.shape={list(self.shape)} does not match data.channels={self.channels} and "
                              f"data.image_size={self.image_size}: remove the override of data.shape.")
        if not self.root.is_dir():
            raise GenzooError(f"data.root={self.root} is not a folder: set data.root to a folder of images.")
        classes = self.classes()
        if self.num_classes != len(classes):
            raise GenzooError(f"data.num_classes={self.num_classes} does not match the {len(classes)} class "
                              f"sub-folders of {self.root}: set data.num_classes={len(classes)}.")

    @property
    def folder(self) -> Path:
        return self.root

    def classes(self) -> list[str]:
        return find_classes(self.root)[0] if any(p.is_dir() for p in self.root.iterdir()) else []

    def images(self) -> list[tuple[str, int]]:
        """(path, class) of every image, in a fixed order."""
        classes = self.classes()
        if classes:
            return make_dataset(str(self.root), {c: i for i, c in enumerate(classes)}, IMG_EXTENSIONS,
                                allow_empty=True)
        return [(str(p), -1) for p in sorted(self.root.iterdir())
                if p.is_file() and has_file_allowed_extension(p.name, IMG_EXTENSIONS)]

    def check_present(self) -> None:
        if not self.root.is_dir():
            raise GenzooError(f"data.root={self.root} is not a folder: set data.root to a folder of images.")
        if not self.images():
            raise GenzooError(f"{self.root} holds no images ({', '.join(IMG_EXTENSIONS)}), neither itself nor in "
                              "sub-folders: set data.root to a folder of images.")

    def source_files(self):
        return [(Path(p), None) for p, _ in self.images()]

    def fetch(self) -> None:
        raise GenzooError("data=folder reads its own files and cannot download any: set data.download=false.")

    def options(self) -> dict:
        return {"image_size": self.image_size, "channels": self.channels, "fractions": self.fractions}

    def held_out(self) -> dict[str, int]:
        n = len(self.images())
        return {k: max(1, round(f * n)) for k, f in self.fractions.items()}

    def decode(self, out):
        resize = v2.Compose([v2.Resize(self.image_size, antialias=True), v2.CenterCrop(self.image_size),
                             v2.PILToTensor()])
        items = self.images()
        images = np.empty((len(items), self.channels, self.image_size, self.image_size), dtype=np.uint8)
        for i, (path, _) in enumerate(items):
            try:
                with Image.open(path) as img:
                    images[i] = resize(img.convert("L" if self.channels == 1 else "RGB")).numpy()
            except (OSError, ValueError) as e:  # PIL's UnidentifiedImageError is an OSError
                raise GenzooError(f"The image {path} cannot be read ({e}): delete it or replace it with a readable "
                                  "image.") from None
        return {"train": (images, np.array([c for _, c in items], dtype=np.int64))}
