"""The baseline: the same work as `trainflow run`, written as a plain Keras script.

Load the IDX files, scale, split 70/10/20, fit Flatten -> Dense(128) -> Dense(10) with
ModelCheckpoint + EarlyStopping, save weights, the .keras model and a SavedModel export, load the
model back and evaluate it; print the epochs trained and the test accuracy as JSON.

    python bench/plain_keras.py DIR OUTPUT_DIR --epochs 10
"""

import argparse
import gzip
import json
import struct
from pathlib import Path

import keras
import numpy as np


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as stream:
        content = stream.read()
    dimensions = content[3]
    shape = struct.unpack(f">{dimensions}I", content[4 : 4 + 4 * dimensions])
    return np.frombuffer(content, dtype=np.uint8, offset=4 + 4 * dimensions).reshape(shape)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("source", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    images = read_idx(args.source / "t10k-images-idx3-ubyte.gz").astype("float32") / 255
    labels = read_idx(args.source / "t10k-labels-idx1-ubyte.gz").astype("int64")
    order = np.random.default_rng(42).permutation(len(labels))
    train, validation, test = np.split(order, [int(0.7 * len(order)), int(0.8 * len(order))])
    keras.utils.set_random_seed(42)
    model = keras.Sequential(
        [
            keras.Input(shape=(28, 28)),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    args.output.mkdir(parents=True, exist_ok=True)
    history = model.fit(
        images[train],
        labels[train],
        batch_size=32,
        epochs=args.epochs,
        verbose=0,
        validation_data=(images[validation], labels[validation]),
        callbacks=[
            keras.callbacks.ModelCheckpoint(
                str(args.output / "save_model_{epoch:02d}.weights.h5"),
                monitor="val_loss",
                save_best_only=True,
                save_weights_only=True,
            ),
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=3),
        ],
    )
    model.save_weights(args.output / "model.weights.h5")
    model.save(args.output / "model.keras")
    model.export(args.output / "saved_model", verbose=False)
    loaded = keras.models.load_model(args.output / "model.keras")
    _, accuracy = loaded.evaluate(images[test], labels[test], verbose=0)
    print(json.dumps({"epochs_completed": len(history.epoch), "test_accuracy": accuracy}))


if __name__ == "__main__":
    main()
