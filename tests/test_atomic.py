import json

import pytest

from trainflow.storage.atomic import atomic_path, temporary_sibling, write_json


def test_temporary_sibling_keeps_the_suffixes_keras_requires(tmp_path):
    temporary = temporary_sibling(tmp_path / "model.weights.h5")
    assert temporary.parent == tmp_path
    assert temporary.name.startswith("model.tmp-")
    assert temporary.name.endswith(".weights.h5")


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "state.json"
    write_json(target, {"epoch": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_text("half writ")
        raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"epoch": 1}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["state.json"]


def test_directory_is_replaced_whole(tmp_path):
    target = tmp_path / "export"
    for version in ("old", "new"):
        with atomic_path(target) as temporary:
            temporary.mkdir()
            (temporary / f"{version}.txt").write_text(version)
    assert sorted(path.name for path in target.iterdir()) == ["new.txt"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["export"]
