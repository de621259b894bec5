"""Datasets for finding tickets: digits (bundled), MNIST, Fashion-MNIST and CIFAR-10, from local files.

Nothing is downloaded unless ``download=True``. Every dataset comes as three in-memory splits
(:class:`DataSplits`): ``train`` and ``val`` (a seeded random split of the official training set) and
``test`` (the official test set, or a fixed 20 % of digits), each yielding ``(image, label)`` with
``image`` a normalised float32 ``C x H x W`` tensor and ``label`` an ``int``.

====================  =========  ==============================================================
name                  shape      where the files are read from
====================  =========  ==============================================================
``digits``            1 x 8 x 8  scikit-learn's bundled ``load_digits`` (1797 images, 10 classes)
``mnist``             1 x 28x28  the four IDX files (``.gz`` or not) in ``data_dir``
``fashion-mnist``     1 x 28x28  same; ``data_dir`` defaults to ``/usr/share/datasets/fashion-mnist``
                                 where Debian's ``dataset-fashion-mnist`` package installs them
``cifar10``           3 x 32x32  torchvision's layout: ``data_dir/cifar-10-batches-py/``
====================  =========  ==============================================================

IDX files are also found in torchvision's layout (``data_dir/MNIST/raw``, ``data_dir/FashionMNIST/raw``)
and under the original names with a dot (``train-images.idx3-ubyte``).
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from torch_slt.core.errors import DatasetFormatError, DatasetNotFoundError, UnknownDatasetError

DATASETS: tuple[str, ...] = ("digits", "fashion-mnist", "mnist", "cifar10")
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
DEFAULT_DATA_DIR = "data"
DIGITS_TEST_FRACTION = 0.2
_DIGITS_SPLIT_SEED = 0  # the digits test split is fixed, independent of the user's seed

# Per-channel mean / std of the training images in [0, 1] (the values everyone uses).
_STATS = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
_CLASSES = {
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                      "Bag", "Ankle boot"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}
_IDX_FILES = {  # split -> (images, labels), standard names without ".gz"
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_TORCHVISION_FOLDER = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}


class ImageDataset(Dataset):
    """Images held in memory, normalised on access: ``((x / scale) - mean) / std``.

    Args:
        images: ``N x C x H x W`` (uint8 or float).
        labels: ``N`` integer labels.
        mean, std: per-channel statistics of ``images / scale``.
        scale: the value of a full-intensity pixel (255 for 8-bit images, 16 for digits).
    """

    def __init__(self, images: Tensor, labels: Tensor, mean: Sequence[float], std: Sequence[float],
                 scale: float = 255.0) -> None:
        if images.ndim != 4 or len(images) != len(labels):
            raise ValueError(f"ImageDataset: expected N x C x H x W images and N labels, got "
                             f"{tuple(images.shape)} and {tuple(labels.shape)}")
        self.images, self.labels, self.scale = images, labels.long(), float(scale)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self._normalize(self.images[index]), int(self.labels[index])

    def _normalize(self, x: Tensor) -> Tensor:
        return (x.float() / self.scale - self.mean) / self.std

    def tensors(self) -> tuple[Tensor, Tensor]:
        """All normalised images (``N x C x H x W`` float32) and labels (``N`` int64) at once."""
        return self._normalize(self.images), self.labels

    def subset(self, indices: Tensor) -> ImageDataset:
        """A new dataset holding the given rows (no copy of the normalisation state)."""
        return ImageDataset(self.images[indices], self.labels[indices], self.mean.flatten().tolist(),
                            self.std.flatten().tolist(), self.scale)


@dataclass
class DataSplits:
    """The three splits of a dataset and what a model needs to know about it."""

    train: ImageDataset
    val: ImageDataset
    test: ImageDataset
    in_shape: tuple[int, int, int]
    num_classes: int
    name: str
    classes: tuple[str, ...] | None = None

    def __repr__(self) -> str:
        return (f"DataSplits({self.name!r}, train={len(self.train)}, val={len(self.val)}, "
                f"test={len(self.test)}, in_shape={self.in_shape}, num_classes={self.num_classes})")


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, *, download: bool = False,
                 val_fraction: float = 0.1, seed: int = 0) -> DataSplits:
    """Load ``name`` as train / val / test splits.

    Args:
        name: one of :data:`DATASETS`.
        data_dir: where the files are; defaults to ``/usr/share/datasets/fashion-mnist`` for
            ``fashion-mnist`` and ``./data`` for ``mnist`` and ``cifar10`` (unused for ``digits``).
        download: fetch missing files with torchvision into ``data_dir`` (``./data`` by default).
        val_fraction: fraction of the training set held out for validation, in [0, 1).
        seed: seeds the train / val split (the test set never depends on it).

    Raises:
        UnknownDatasetError: unknown name (also a ``ValueError``).
        DatasetNotFoundError: missing files (also a ``FileNotFoundError``); the message lists where
            they were looked for and how to get them.

    Example:
        >>> splits = load_dataset("digits", val_fraction=0.1, seed=0)
        >>> len(splits.train), len(splits.val), len(splits.test), splits.in_shape
        (1294, 144, 359, (1, 8, 8))
    """
    if name not in DATASETS:
        raise UnknownDatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) \
            or not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"load_dataset(): val_fraction={val_fraction!r} must be in [0, 1) (0.1 holds out "
                         f"10% of the training set for validation)")
    if name == "digits":
        train, test = _digits()
    elif name == "cifar10":
        train, test = _cifar10(data_dir, download)
    else:
        train, test = _idx_dataset(name, data_dir, download)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train), generator=generator)
    n_val = int(round(val_fraction * len(train)))
    val_idx, train_idx = order[:n_val].sort().values, order[n_val:].sort().values
    num_classes = 10
    return DataSplits(train.subset(train_idx), train.subset(val_idx), test,
                      tuple(train.images.shape[1:]), num_classes, name, _CLASSES.get(name))


# ------------------------------------------------------------------------------------------ digits
def _digits() -> tuple[ImageDataset, ImageDataset]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError('the "digits" dataset needs scikit-learn: pip install "torch-slt[cli]"') from err
    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1)  # N x 1 x 8 x 8, 0..16
    labels = torch.as_tensor(bunch.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(_DIGITS_SPLIT_SEED))
    n_test = int(round(DIGITS_TEST_FRACTION * len(labels)))
    test_idx, train_idx = order[:n_test].sort().values, order[n_test:].sort().values
    pool = images[train_idx] / 16.0
    mean, std = [pool.mean().item()], [pool.std().item()]
    return (ImageDataset(images[train_idx], labels[train_idx], mean, std, scale=16.0),
            ImageDataset(images[test_idx], labels[test_idx], mean, std, scale=16.0))


# ------------------------------------------------------------------------------------- IDX (MNIST)
_IDX_DTYPES = {0x08: ("u1", torch.uint8), 0x09: ("i1", torch.int8), 0x0B: (">i2", torch.int16),
               0x0C: (">i4", torch.int32), 0x0D: (">f4", torch.float32), 0x0E: (">f8", torch.float64)}


def read_idx(path: str | os.PathLike) -> Tensor:
    """Read an IDX file (the MNIST format), gzip-compressed or not, into a tensor.

    The header is two zero bytes, a type code (0x08 = uint8, ... 0x0E = float64), the number of
    dimensions, then one big-endian int32 per dimension; the data follows in C order, big-endian.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number {data[:4].hex() or 'empty'})")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}i", data[4:4 + 4 * ndim])
    np_dtype, torch_dtype = _IDX_DTYPES[data[2]]
    offset = 4 + 4 * ndim
    count = 1
    for n in shape:
        count *= n
    itemsize = torch.tensor([], dtype=torch_dtype).element_size()
    if len(data) - offset != count * itemsize:
        raise ValueError(f"{path}: IDX header says shape {shape} ({count * itemsize} bytes of data) but the "
                         f"file holds {len(data) - offset}; the file is truncated or corrupt")
    if torch_dtype == torch.uint8:
        return torch.frombuffer(bytearray(data[offset:]), dtype=torch.uint8).reshape(shape)
    import numpy as np

    return torch.from_numpy(np.frombuffer(data, dtype=np_dtype, offset=offset).astype(np_dtype[-2:])
                            .reshape(shape).copy())


def _idx_dirs(name: str, data_dir: Path) -> list[Path]:
    folder = _TORCHVISION_FOLDER[name]
    return [data_dir, data_dir / "raw", data_dir / folder / "raw", data_dir / name]


def _find_idx(name: str, stem: str, dirs: list[Path]) -> Path | None:
    dotted = stem.replace("-idx", ".idx")  # train-images.idx3-ubyte, as unpacked from the original site
    for directory in dirs:
        for candidate in (stem, stem + ".gz", dotted, dotted + ".gz"):
            path = directory / candidate
            if path.is_file():
                return path
    return None


def _idx_dataset(name: str, data_dir: str | os.PathLike | None,
                 download: bool) -> tuple[ImageDataset, ImageDataset]:
    default = FASHION_MNIST_DIR if name == "fashion-mnist" else DEFAULT_DATA_DIR
    root = Path(data_dir if data_dir is not None else default).expanduser()
    dirs = _idx_dirs(name, root)
    stems = [s for pair in _IDX_FILES.values() for s in pair]
    found = {s: _find_idx(name, s, dirs) for s in stems}
    if None in found.values() and download:
        target = Path(data_dir if data_dir is not None else DEFAULT_DATA_DIR).expanduser()
        _torchvision_download(name, target)
        dirs = _idx_dirs(name, target)
        found = {s: _find_idx(name, s, dirs) for s in stems}
    missing = [s for s, p in found.items() if p is None]
    if missing:
        raise DatasetNotFoundError(_missing_idx_message(name, missing, dirs, data_dir))
    splits = []
    for split, (images_stem, labels_stem) in _IDX_FILES.items():
        images, labels = read_idx(found[images_stem]), read_idx(found[labels_stem])
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"{name} {split}: images {tuple(images.shape)} ({found[images_stem]}) and "
                             f"labels {tuple(labels.shape)} ({found[labels_stem]}) do not match (expected "
                             f"N x H x W and N)")
        mean, std = _STATS[name]
        splits.append(ImageDataset(images.unsqueeze(1), labels.long(), mean, std, scale=255.0))
    return splits[0], splits[1]


def _missing_idx_message(name: str, missing: list[str], dirs: list[Path], data_dir) -> str:
    looked = ", ".join(str(d) for d in dirs)
    files = ", ".join(f"{s}[.gz]" for s in missing)
    how = []
    if name == "fashion-mnist":
        how.append(f"on Debian/Ubuntu `sudo apt-get install dataset-fashion-mnist` puts them in "
                   f"{FASHION_MNIST_DIR} (the default)")
        source = "https://github.com/zalandoresearch/fashion-mnist"
    else:
        source = "https://ossci-datasets.s3.amazonaws.com/mnist/ (torchvision's mirror)"
    how.append("pass download=True (CLI: --download) to fetch them with torchvision into data_dir "
               f"(default ./{DEFAULT_DATA_DIR})")
    how.append(f"or copy the four IDX files from {source} into a folder and pass it as data_dir "
               f"(CLI: --data-dir)")
    return (f"{name}: missing {files}; looked in {looked}. To get them: " + "; ".join(how) + ".")


def _torchvision_download(name: str, root: Path) -> None:
    try:
        from torchvision import datasets
    except ImportError as err:
        raise ImportError(f"download=True for {name!r} needs torchvision: pip install \"torch-slt[timm]\" "
                          f"(or pip install torchvision)") from err
    cls = {"mnist": datasets.MNIST, "fashion-mnist": datasets.FashionMNIST, "cifar10": datasets.CIFAR10}[name]
    root.mkdir(parents=True, exist_ok=True)
    for train in (True, False):
        cls(root=str(root), train=train, download=True)


# ----------------------------------------------------------------------------------------- CIFAR-10
_CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = ("test_batch",)


def _cifar10(data_dir: str | os.PathLike | None, download: bool) -> tuple[ImageDataset, ImageDataset]:
    root = Path(data_dir if data_dir is not None else DEFAULT_DATA_DIR).expanduser()
    folder = root / _CIFAR_FOLDER
    missing = [f for f in _CIFAR_TRAIN + _CIFAR_TEST if not (folder / f).is_file()]
    if missing and download:
        _torchvision_download("cifar10", root)
        missing = [f for f in _CIFAR_TRAIN + _CIFAR_TEST if not (folder / f).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"cifar10: missing {', '.join(missing)} in {folder} (torchvision's layout: "
            f"<data_dir>/{_CIFAR_FOLDER}/data_batch_1..5, test_batch). To get them: pass download=True "
            f"(CLI: --download) to fetch them with torchvision into {root}, or download "
            f"https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and extract it into {root} "
            f"(CLI: --data-dir {root})."
        )
    mean, std = _STATS["cifar10"]
    out = []
    for files in (_CIFAR_TRAIN, _CIFAR_TEST):
        images, labels = [], []
        for f in files:
            batch = read_cifar_batch(folder / f)
            images.append(torch.as_tensor(batch[b"data"], dtype=torch.uint8).reshape(-1, 3, 32, 32))
            labels.append(torch.as_tensor(batch[b"labels"], dtype=torch.long))
        out.append(ImageDataset(torch.cat(images), torch.cat(labels), mean, std, scale=255.0))
    return out[0], out[1]


#: The only globals the official CIFAR-10 python files (pickled by Python 2 numpy) and re-pickled copies
#: refer to: numpy's array reconstruction (old and new module paths) and bytes from Python 3 protocol 2.
_CIFAR_PICKLE_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
})


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`_CIFAR_PICKLE_GLOBALS`.

    ``pickle.load`` runs whatever callable a file names (``os.system`` included), and a data directory
    is user input: a planted ``data_batch_1`` must not run code. torchvision uses plain ``pickle.load``.
    """

    def find_class(self, module: str, name: str):
        if (module, name) not in _CIFAR_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refers to {module}.{name}")
        return super().find_class(module, name)


def read_cifar_batch(path: Path) -> dict:
    """One CIFAR-10 python batch file: ``{b"data": uint8 array N x 3072, b"labels": [int] * N, ...}``."""
    try:
        with open(path, "rb") as fh:
            batch = _CifarUnpickler(fh, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as err:
        raise DatasetFormatError(
            f"cifar10: {path} is not an official CIFAR-10 python batch ({err}); it was refused unread "
            f"(only numpy arrays, lists and bytes are accepted, so a planted file cannot run code). "
            f"Delete the folder and download it again (--download, or "
            f"https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz).") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DatasetFormatError(f"cifar10: {path} holds no b'data' and b'labels' entries; it is not a "
                                 f"CIFAR-10 python batch. Download the dataset again.")
    return batch
