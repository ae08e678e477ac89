"""CelebA (Liu et al. 2015), aligned and cropped faces, as DCGAN uses them: 3×64×64 RGB, 256 levels, no labels.

Read by torchvision from ``{data_dir}/celeba/``: the JPEGs in ``img_align_celeba/`` and its five ``.txt`` files
(``list_eval_partition.txt``, ``identity_CelebA.txt``, ``list_attr_celeba.txt``, ``list_bbox_celeba.txt``,
``list_landmarks_align_celeba.txt``), whose md5 sums torchvision checks. The official partition gives the splits
(162,770 train / 19,867 val / 19,962 test).

Each 178×218 image is centre-cropped to 108×108 and resized to 64×64 (antialiased), as in the DCGAN reference code
for CelebA (carpedm20's DCGAN-tensorflow, ``--input_height=108 --crop``): a 108 square keeps the face from brow to
chin and drops most of the background. The decoded 2.5 GB of uint8 are memory-mapped from the cache, so DDP ranks
share them. The 40 attributes are left out (labels are -1), and so are the images' own md5 sums: torchvision
checks the zip it extracts them from, and the cache notices a changed image by its size and modification time.
"""

from __future__ import annotations

import numpy as np
from torchvision.datasets import CelebA
from torchvision.transforms import v2

from genzoo.data.disk import DiskDataModule, Downloads
from genzoo.errors import GenzooError

CROP, SIZE = 108, 64


class CelebAFiles(Downloads, CelebA):
    """torchvision's CelebA reader; with ``verify_checksums=False`` its md5 checks only ask that the files exist."""

    def __init__(self, root, split: str = "train", download: bool = False, verify_checksums: bool = True,
                 transform=None):
        if not verify_checksums:
            self.file_list = [(file_id, None, name) for file_id, _, name in CelebA.file_list]
        super().__init__(root, split=split, target_type=[], transform=transform, download=download)


class CelebADataModule(DiskDataModule):
    NAME, TITLE, FOLDER = "celeba", "CelebA", "celeba"
    SHAPE, LEVELS, NUM_CLASSES = (3, SIZE, SIZE), 256, 0

    def text_files(self):
        return [(self.folder / name, md5) for _, md5, name in CelebA.file_list if name.endswith(".txt")]

    def source_files(self):
        files = self.text_files()
        partition = self.folder / "list_eval_partition.txt"
        if partition.is_file():  # every image the partition names must be there
            names = [line.split()[0] for line in partition.read_text().splitlines() if line.strip()]
            files += [(self.folder / "img_align_celeba" / name, None) for name in names]
        return files

    def held_out(self) -> dict[str, int]:
        return {}  # CelebA has its own validation split

    def options(self) -> dict:
        return {"crop": CROP, "size": SIZE}

    def fetch(self) -> None:
        self.title_read(self.text_files(), lambda: CelebAFiles(
            self.data_dir, download=True, verify_checksums=self.verify_checksums))

    def decode(self, out):
        crop = v2.Compose([v2.CenterCrop(CROP), v2.Resize(SIZE, antialias=True), v2.PILToTensor()])
        for name, split in (("train", "train"), ("val", "valid"), ("test", "test")):
            ds = self.title_read(self.text_files(), lambda: CelebAFiles(
                self.data_dir, split=split, verify_checksums=self.verify_checksums, transform=crop))
            # written straight into the memory-mapped cache file: the whole set never sits in memory at once
            images = out.empty(f"{name}_images", (len(ds), 3, SIZE, SIZE))
            for i in range(len(ds)):
                try:
                    images[i] = ds[i][0].numpy()
                except (OSError, ValueError, RuntimeError) as e:  # PIL's UnidentifiedImageError is an OSError
                    path = self.folder / "img_align_celeba" / ds.filename[i]
                    raise GenzooError(f"The CelebA image {path} cannot be read ({e}): copy it again, or delete "
                                      "img_align_celeba/ and set data.download=true.") from None
            images.flush()
            out.put(f"{name}_labels", np.full(len(ds), -1, dtype=np.int64))
        return {}
