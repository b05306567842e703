import gzip

import numpy as np
import pytest

from tests.conftest import synthetic_images, write_idx, write_idx_pair
from trainflow.config import DataSource
from trainflow.data.readers import read_idx_file
from trainflow.data.sources import locate_source_files, read_source
from trainflow.errors import DataSourceError


def read(spec: str):
    source = DataSource.parse(spec)
    return read_source(source, locate_source_files(source))


def test_single_idx_pair_is_one_split(idx_dir):
    splits = read(f"idx:{idx_dir}")
    assert list(splits) == ["all"]
    images, labels = splits["all"].images, splits["all"].labels
    assert images.shape == (400, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (400,)
    np.testing.assert_array_equal(images, synthetic_images(400, seed=1)[0])


def test_train_and_t10k_pairs_are_train_and_test(tmp_path):
    write_idx_pair(tmp_path, "train", *synthetic_images(50, seed=1))
    write_idx_pair(tmp_path, "t10k", *synthetic_images(20, seed=2))
    splits = read(f"idx:{tmp_path}")
    assert {name: len(split.labels) for name, split in splits.items()} == {"train": 50, "test": 20}


def test_idx_with_wrong_magic_number_names_the_file(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    with gzip.open(path, "wb") as stream:
        stream.write(b"\x00\x00\x0d\x03" + b"\x00" * 20)
    with pytest.raises(DataSourceError, match="t10k-images-idx3-ubyte.gz: not an IDX file"):
        read_idx_file(path)


def test_truncated_gzip_is_reported_as_damaged(tmp_path):
    path = write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", synthetic_images(20, seed=1)[0])
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(DataSourceError, match="cannot decompress"):
        read_idx_file(path)


def test_idx_payload_shorter_than_header_promises(tmp_path):
    path = tmp_path / "x-labels-idx1-ubyte"
    path.write_bytes(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"\x01" * 7)
    with pytest.raises(DataSourceError, match="promises 10 values"):
        read_idx_file(path)


def test_npz_reads_train_and_test(npz_file):
    splits = read(f"npz:{npz_file}")
    assert {name: split.images.shape for name, split in splits.items()} == {
        "train": (300, 28, 28),
        "test": (100, 28, 28),
    }


def test_npz_missing_keys_are_named(tmp_path):
    path = tmp_path / "partial.npz"
    np.savez(path, x_train=np.zeros((2, 28, 28)), y_train=np.zeros(2))
    with pytest.raises(DataSourceError, match="missing arrays x_test, y_test"):
        read(f"npz:{path}")


def test_missing_path_is_named(tmp_path):
    with pytest.raises(DataSourceError, match=f"{tmp_path / 'nowhere'} does not exist"):
        read(f"idx:{tmp_path / 'nowhere'}")


def test_directory_without_recognisable_files(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataSourceError, match="holds no recognisable files"):
        read(f"idx:{tmp_path}")


def test_idx_images_without_labels(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", synthetic_images(5, seed=1)[0])
    with pytest.raises(DataSourceError, match="t10k has no labels IDX file"):
        read(f"idx:{tmp_path}")
