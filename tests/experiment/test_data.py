"""torch_slt.experiment.data: splits, IDX reading (written by the test itself), missing-file errors."""

import gzip
import pickle
import struct
from pathlib import Path

import pytest
import torch

from torch_slt.experiment.data import DATASETS, FASHION_MNIST_DIR, load_dataset, read_idx
from torch_slt.core.errors import DatasetFormatError, DatasetNotFoundError, SLTError, UnknownDatasetError


def _write_idx(path, tensor: torch.Tensor, code: int = 0x08, fmt: str = "B", compress: bool = False):
    header = bytes([0, 0, code, tensor.ndim]) + struct.pack(f">{tensor.ndim}i", *tensor.shape)
    body = struct.pack(f">{tensor.numel()}{fmt}", *tensor.flatten().tolist())
    opener = gzip.open if compress else open
    with opener(path, "wb") as fh:
        fh.write(header + body)


def _fake_mnist(folder, n_train=30, n_test=10, compress=False, dotted=False):
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    data = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8)
        labels = torch.arange(n, dtype=torch.uint8) % 10
        suffix = ".gz" if compress else ""
        sep = "." if dotted else "-"
        _write_idx(folder / f"{prefix}-images{sep}idx3-ubyte{suffix}", images, compress=compress)
        _write_idx(folder / f"{prefix}-labels{sep}idx1-ubyte{suffix}", labels, compress=compress)
        data[prefix] = (images, labels)
    return data


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_uint8_raw_and_gz(tmp_path, compress):
    x = torch.randint(0, 256, (4, 3, 5), dtype=torch.uint8)
    path = tmp_path / ("x.idx" + (".gz" if compress else ""))
    _write_idx(path, x, compress=compress)
    assert torch.equal(read_idx(path), x)


def test_read_idx_wider_types_are_big_endian(tmp_path):
    x = torch.tensor([[1, -2, 300000], [7, 8, -9]], dtype=torch.int32)
    _write_idx(tmp_path / "i.idx", x, code=0x0C, fmt="i")
    assert torch.equal(read_idx(tmp_path / "i.idx"), x)
    f = torch.tensor([0.5, -1.25], dtype=torch.float32)
    _write_idx(tmp_path / "f.idx", f, code=0x0D, fmt="f")
    assert torch.equal(read_idx(tmp_path / "f.idx"), f)


def test_read_idx_rejects_garbage_and_truncation(tmp_path):
    (tmp_path / "bad").write_bytes(b"PK\x03\x04rest")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    _write_idx(tmp_path / "short", torch.zeros(4, 4, dtype=torch.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-3])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "short")


@pytest.mark.parametrize("compress,layout", [(False, ""), (True, ""), (True, "MNIST/raw"), (False, "dotted")])
def test_mnist_from_idx_files(tmp_path, compress, layout):
    folder = tmp_path / layout if layout and layout != "dotted" else tmp_path
    data = _fake_mnist(folder, compress=compress, dotted=layout == "dotted")
    splits = load_dataset("mnist", tmp_path, val_fraction=0.2, seed=3)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (24, 6, 10)
    assert splits.in_shape == (1, 28, 28) and splits.num_classes == 10
    x, y = splits.test[4]
    assert isinstance(y, int) and y == 4 and x.dtype == torch.float32 and x.shape == (1, 28, 28)
    expected = (data["t10k"][0][4].float() / 255 - 0.1307) / 0.3081
    assert torch.allclose(x[0], expected)
    images, labels = splits.train.tensors()
    assert images.shape == (24, 1, 28, 28) and labels.dtype == torch.int64


def test_val_split_is_seeded_disjoint_and_complete(tmp_path):
    a = load_dataset("digits", seed=0)
    b = load_dataset("digits", seed=0)
    c = load_dataset("digits", seed=1)
    assert torch.equal(a.val.labels, b.val.labels) and torch.equal(a.val.images, b.val.images)
    assert not torch.equal(a.val.images, c.val.images)
    assert torch.equal(a.test.images, c.test.images)  # the test set never depends on the seed
    assert len(a.train) + len(a.val) == len(c.train) + len(c.val) == 1797 - len(a.test)
    train_rows = {tuple(r.flatten().tolist()) for r in a.train.images}
    assert not any(tuple(r.flatten().tolist()) in train_rows for r in a.test.images[:50])


def test_digits_shapes_and_normalisation():
    splits = load_dataset("digits", val_fraction=0.0)
    assert splits.in_shape == (1, 8, 8) and splits.num_classes == 10 and len(splits.val) == 0
    images, labels = splits.train.tensors()
    assert images.mean().abs().item() < 1e-3 and abs(images.std().item() - 1.0) < 1e-2
    assert set(labels.tolist()) == set(range(10))


def test_missing_files_say_where_and_how(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", tmp_path / "nowhere")
    msg = str(info.value)
    assert str(tmp_path / "nowhere") in msg and "MNIST/raw" in msg and "--download" in msg
    assert "train-images-idx3-ubyte" in msg
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, SLTError)
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", tmp_path)
    with pytest.raises(DatasetNotFoundError, match="cifar-10-python.tar.gz"):
        load_dataset("cifar10", tmp_path)


def test_partial_download_is_reported_file_by_file(tmp_path):
    _fake_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"missing t10k-labels-idx1-ubyte\[.gz\];"):
        load_dataset("mnist", tmp_path)


def test_cifar10_in_torchvision_layout(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": torch.randint(0, 256, (4, 3072), generator=g, dtype=torch.uint8).numpy(),
                 b"labels": [0, 1, 2, 9]}
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh)
    splits = load_dataset("cifar10", tmp_path, val_fraction=0.25)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (15, 5, 4)
    assert splits.in_shape == (3, 32, 32) and splits.classes[9] == "truck"
    assert splits.test[3][1] == 9


def _cifar_folder(tmp_path, protocol=pickle.DEFAULT_PROTOCOL):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir(exist_ok=True)
    g = torch.Generator().manual_seed(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"batch_label": b"training batch", b"filenames": [b"a.png"] * 4,
                 b"data": torch.randint(0, 256, (4, 3072), generator=g, dtype=torch.uint8).numpy(),
                 b"labels": [0, 1, 2, 9]}
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh, protocol=protocol)
    return folder


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_restricted_unpickler_reads_every_pickle_protocol(tmp_path, protocol):
    _cifar_folder(tmp_path, protocol)  # 2: as Python 2 / re-pickled bytes; 5: numpy's out-of-band form
    assert len(load_dataset("cifar10", tmp_path, val_fraction=0.25).test) == 4


class _Planted:
    """A pickle payload that runs code on load (here: creates a file)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_cifar10_planted_pickle_is_refused_without_running_code(tmp_path):
    folder = _cifar_folder(tmp_path)
    marker = tmp_path / "pwned"
    with open(folder / "data_batch_3", "wb") as fh:
        pickle.dump({b"data": _Planted(marker), b"labels": [0]}, fh)
    with pytest.raises(DatasetFormatError, match=r"data_batch_3 is not an official CIFAR-10 python batch "
                                                  r"\(refers to (posix|os)\.system\).*cannot run code"):
        load_dataset("cifar10", tmp_path)
    assert not marker.exists()
    assert isinstance(DatasetFormatError("x"), SLTError)


def test_cifar10_truncated_or_foreign_file_is_a_format_error(tmp_path):
    folder = _cifar_folder(tmp_path)
    (folder / "test_batch").write_bytes((folder / "test_batch").read_bytes()[:100])
    with pytest.raises(DatasetFormatError, match="test_batch is not an official"):
        load_dataset("cifar10", tmp_path)
    with open(folder / "test_batch", "wb") as fh:
        pickle.dump([1, 2, 3], fh)
    with pytest.raises(DatasetFormatError, match="holds no b'data' and b'labels'"):
        load_dataset("cifar10", tmp_path)


def test_bad_arguments():
    with pytest.raises(UnknownDatasetError, match="digits, fashion-mnist, mnist, cifar10"):
        load_dataset("svhn")
    with pytest.raises(ValueError, match="val_fraction"):
        load_dataset("digits", val_fraction=1.0)
    assert DATASETS == ("digits", "fashion-mnist", "mnist", "cifar10")


@pytest.mark.skipif(not Path(FASHION_MNIST_DIR, "t10k-labels-idx1-ubyte.gz").exists(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_the_debian_package():
    splits = load_dataset("fashion-mnist")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (54000, 6000, 10000)
    assert splits.classes[0] == "T-shirt/top"
