"""A model builder for the exact-resume tests: what the example lacks (a learning-rate schedule,
GaussianNoise, SpatialDropout), returned compiled, so trainflow keeps its optimizer."""

import keras


def scheduled_noisy(input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input(shape=input_shape),
            keras.layers.Reshape((*input_shape, 1)),
            keras.layers.GaussianNoise(0.1),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.SpatialDropout2D(0.2),
            keras.layers.Flatten(),
            keras.layers.Dense(num_classes, activation="softmax"),
        ]
    )
    schedule = keras.optimizers.schedules.ExponentialDecay(0.003, decay_steps=5, decay_rate=0.8)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model
