"""Resume checkpoints written from arrays in a background thread load like Keras's own files."""

import h5py
import keras
import numpy as np
import pytest

from trainflow.checkpoints.state import ResumeState
from trainflow.checkpoints.store import checkpoint_files
from trainflow.checkpoints.writer import CheckpointWriter
from trainflow.paths import ArtifactPaths
from trainflow.training.models import build_model


def trained_model(kind: str) -> keras.Model:
    """A model whose weights and optimizer state have moved away from their initial values."""
    keras.utils.set_random_seed(7)
    model = build_model(kind, (28, 28), 10)
    images = np.random.default_rng(0).random((64, 28, 28), dtype=np.float32)
    model.fit(images, np.arange(64) % 10, batch_size=16, epochs=1, verbose=0)
    return model


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_written_checkpoint_holds_every_variable_as_keras_saves_it(kind, tmp_path):
    model = trained_model(kind)
    paths = ArtifactPaths.at(tmp_path).run("writer")
    writer = CheckpointWriter(model, build_model(kind, (28, 28), 10), paths, keep=2)
    state = ResumeState(model_kind=kind, data_fingerprint="", seed=0, batch_size=16, global_step=4)
    writer.commit(state)
    committed = writer.close()
    weights_file, _ = checkpoint_files(paths.resume_dir, 4)
    assert committed.weights_file == weights_file.name

    keras_file = tmp_path / "keras.weights.h5"
    model.save_weights(keras_file)
    with h5py.File(weights_file) as ours, h5py.File(keras_file) as theirs:
        names = []
        theirs.visititems(lambda name, item: names.append(name))
        for name in names:
            if isinstance(theirs[name], h5py.Dataset):
                np.testing.assert_array_equal(ours[name][()], theirs[name][()], err_msg=name)

    loaded = build_model(kind, (28, 28), 10)
    loaded.load_weights(weights_file)
    for mine, original in zip(
        [*loaded.weights, *loaded.optimizer.variables], [*model.weights, *model.optimizer.variables]
    ):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(original))
    assert int(loaded.optimizer.iterations.numpy()) == 4


def test_a_failed_write_is_raised_by_the_next_commit_or_flush(tmp_path):
    model = build_model("mlp", (28, 28), 10)
    paths = ArtifactPaths.at(tmp_path).run("writer")
    paths.checkpoints_dir.mkdir(parents=True)
    paths.resume_dir.write_text("")  # not a directory
    writer = CheckpointWriter(model, build_model("mlp", (28, 28), 10), paths, 2)
    writer.commit(ResumeState(model_kind="mlp", data_fingerprint="", seed=0, batch_size=16))
    with pytest.raises(OSError):
        writer.close()
