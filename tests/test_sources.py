import dataclasses
import gzip
import io
import struct
import zipfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import synthetic_images, write_idx, write_idx_pair
from trainflow.data.idx import read_idx_file
from trainflow.data.parquet import IMAGE_COLUMN, IMAGE_SHAPE_METADATA_KEY, LABEL_COLUMN
from trainflow.data.raw import RawSplit
from trainflow.data.sources import locate_source_files, read_source
from trainflow.datasets import DataSource
from trainflow.errors import DataSourceError


def read(spec: str):
    """The splits of `spec`, every image read into `images` (the readers' errors included)."""
    source = DataSource.parse(spec)
    return {
        name: read_whole(split)
        for name, split in read_source(source, locate_source_files(source)).items()
    }


def read_whole(split: RawSplit) -> RawSplit:
    empty = np.empty((0, *split.shape[1:]), split.pixel_dtype)  # for a split without rows
    images = np.concatenate([empty, *split.image_chunks(max(1, split.count))])
    return dataclasses.replace(split, images=images)


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


def test_idx_header_with_more_dimensions_than_images_have(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 255]) + bytes(4 * 255))
    with pytest.raises(DataSourceError, match=f"{path}: IDX header declares 255 dimensions"):
        read_idx_file(path)


def test_idx_dimensions_whose_product_overflows_int64_are_counted_exactly(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", 2**21, 2**21, 2**22))
    with pytest.raises(DataSourceError, match=f"promises {2**64} values"):
        read_idx_file(path)


def test_idx_shape_too_large_for_numpy_even_without_values(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", 0, 2**32 - 1, 2**32 - 1))
    with pytest.raises(DataSourceError, match=f"{path}: IDX header declares the shape"):
        read_idx_file(path)


def test_single_npy_array_is_not_an_npz(tmp_path):
    path = tmp_path / "data.npz"
    with path.open("wb") as stream:
        np.save(stream, synthetic_images(5, seed=1)[0])
    with pytest.raises(DataSourceError, match=f"{path}: a single .npy array, not an npz archive"):
        read(f"npz:{path}")


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def write_zip(path, members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> bytearray:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return bytearray(path.read_bytes())


def npz_members(**extra: bytes) -> dict[str, bytes]:
    """The four arrays of a small npz as archive members, some replaced by `extra`."""
    images, labels = synthetic_images(20, seed=1)
    arrays = {"x_train": images, "y_train": labels, "x_test": images, "y_test": labels}
    return {f"{key}.npy": extra.get(key, npy_bytes(array)) for key, array in arrays.items()}


def central_directory_field(content: bytearray, offset: int) -> int:
    """Position of a field of the first member's entry in a zip's central directory."""
    return content.index(b"PK\x01\x02") + offset


def damaged_crc(path):
    content = write_zip(path, npz_members())
    content[content.index(b"\x93NUMPY") + 200] ^= 0xFF
    return content, "Bad CRC-32"


def damaged_lzma(path):
    content = write_zip(path, npz_members(), compression=zipfile.ZIP_LZMA)
    content[100] ^= 0xFF
    return content, "Corrupt input data"


def unknown_compression(path):
    content = write_zip(path, npz_members())
    content[central_directory_field(content, 10)] = 99
    return content, "compression method is not supported"


def encrypted_member(path):
    content = write_zip(path, npz_members())
    content[central_directory_field(content, 8)] |= 1
    return content, "is encrypted"


def cut_after_zip_magic(path):
    return bytearray(b"PK\x03\x04" + bytes(40)), "File is not a zip file"


def huge_declared_shape(path):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": (10**18,)}
    )
    return write_zip(path, npz_members(x_train=header.getvalue())), "Unable to allocate"


def huge_npy_header(path):
    # numpy's message for this one spans three lines; the CLI prints one.
    header = b"\x93NUMPY\x02\x00" + struct.pack("<I", 200_000) + b" " * 200_000
    return write_zip(path, npz_members(x_train=header)), "is large and may not be safe"


@pytest.mark.parametrize(
    "damage",
    [
        damaged_crc,
        damaged_lzma,
        unknown_compression,
        encrypted_member,
        cut_after_zip_magic,
        huge_declared_shape,
        huge_npy_header,
    ],
    ids=lambda function: function.__name__,
)
def test_damaged_npz_is_one_line_naming_the_file(tmp_path, damage):
    path = tmp_path / "data.npz"
    content, problem = damage(path)
    path.write_bytes(bytes(content))
    with pytest.raises(DataSourceError) as raised:
        read(f"npz:{path}")
    message = str(raised.value)
    assert message.startswith(f"{path}: not a readable npz file (") and problem in message
    assert "\n" not in message


def test_npz_member_that_is_not_npy_is_named(tmp_path):
    path = tmp_path / "data.npz"
    write_zip(path, npz_members(y_train=b"1,2,3\n", y_test=b""))
    with pytest.raises(DataSourceError, match=f"{path}: y_train, y_test not in .npy format"):
        read(f"npz:{path}")


def write_parquet_splits(directory, table: pa.Table) -> str:
    """`table` as both train.parquet and test.parquet; returns the source."""
    for split in ("train", "test"):
        pq.write_table(table, directory / f"{split}.parquet")
    return f"parquet:{directory}"


def parquet_table(images=None, labels=None, image_shape: bytes | None = None) -> pa.Table:
    """100 synthetic rows; `images` (lists of 784 pixels or None) and `labels` replace theirs."""
    pixels, classes = synthetic_images(100, seed=1)
    table = pa.table(
        {
            IMAGE_COLUMN: pa.array(
                images if images is not None else pixels.reshape(100, -1).tolist(),
                pa.list_(pa.uint8(), 784),
            ),
            LABEL_COLUMN: pa.array(labels if labels is not None else classes.tolist(), pa.int64()),
        }
    )
    if image_shape is None:
        return table
    return table.replace_schema_metadata({IMAGE_SHAPE_METADATA_KEY: image_shape})


@pytest.mark.parametrize(
    "image_shape", [b"a,b", b"28x28", b"28", b"1,2,3,4", b"", b"\xff\xfe", b"-28,-28", b"0,0"]
)
def test_parquet_image_shape_metadata_must_be_two_or_three_positive_integers(tmp_path, image_shape):
    source = write_parquet_splits(tmp_path, parquet_table(image_shape=image_shape))
    with pytest.raises(DataSourceError) as raised:
        read(source)
    assert str(raised.value).startswith(
        f"{tmp_path / 'train.parquet'}: schema metadata trainflow.image_shape is "
    )
    assert "expected 'HEIGHT,WIDTH' or 'HEIGHT,WIDTH,CHANNELS', positive integers" in str(
        raised.value
    )


def test_parquet_image_shape_metadata_may_name_channels(tmp_path):
    source = write_parquet_splits(tmp_path, parquet_table(image_shape=b"14,14,4"))
    assert read(source)["train"].images.shape == (100, 14, 14, 4)


def test_parquet_image_shape_metadata_must_fit_the_pixels(tmp_path):
    source = write_parquet_splits(tmp_path, parquet_table(image_shape=b"28,28,3"))
    with pytest.raises(DataSourceError, match="images of 784 pixels do not fit the shape 28x28x3"):
        read(source)


def test_parquet_image_shape_metadata_may_have_spaces(tmp_path):
    source = write_parquet_splits(tmp_path, parquet_table(image_shape=b"28, 28"))
    assert read(source)["train"].images.shape == (100, 28, 28)


def rows_with_null(values: list, row: int) -> list:
    return [None if index == row else value for index, value in enumerate(values)]


def test_parquet_null_labels_are_named(tmp_path):
    labels = rows_with_null(synthetic_images(100, seed=1)[1].tolist(), row=7)
    source = write_parquet_splits(tmp_path, parquet_table(labels=labels))
    with pytest.raises(DataSourceError, match="train.parquet: column 'label' has 1 null labels"):
        read(source)


def test_parquet_null_images_are_named(tmp_path):
    images = rows_with_null(synthetic_images(100, seed=1)[0].reshape(100, -1).tolist(), row=7)
    source = write_parquet_splits(tmp_path, parquet_table(images=images))
    with pytest.raises(DataSourceError, match="train.parquet: column 'image' has 1 null images"):
        read(source)


def test_parquet_null_pixels_are_named(tmp_path):
    images = synthetic_images(100, seed=1)[0].reshape(100, -1).tolist()
    images[7][300] = None
    source = write_parquet_splits(tmp_path, parquet_table(images=images))
    with pytest.raises(DataSourceError, match="train.parquet: column 'image' has 1 null pixels"):
        read(source)


def test_parquet_images_of_zero_pixels(tmp_path):
    table = pa.table(
        {IMAGE_COLUMN: pa.array([[]] * 3, pa.list_(pa.uint8(), 0)), LABEL_COLUMN: [1, 2, 3]}
    )
    source = write_parquet_splits(tmp_path, table)
    with pytest.raises(DataSourceError, match="train.parquet: column 'image' holds lists of 0"):
        read(source)


def test_parquet_duplicate_columns_are_one_line(tmp_path):
    table = parquet_table()
    duplicated = pa.Table.from_arrays(
        [*table.columns, table[LABEL_COLUMN]], names=[IMAGE_COLUMN, LABEL_COLUMN, LABEL_COLUMN]
    )
    source = write_parquet_splits(tmp_path, duplicated)
    with pytest.raises(DataSourceError, match=r"columns are \['image', 'label', 'label'\]"):
        read(source)
