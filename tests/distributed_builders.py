"""A model builder the distributed loop must refuse: its own `train_step`, which `--workers`
would not run (and so would silently train another model than the user wrote)."""

import keras


class SelfTrainingClassifier(keras.Model):
    def train_step(self, data):  # never run: the model is refused before training
        return super().train_step(data)


def own_train_step(input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    inputs = keras.Input(shape=input_shape)
    hidden = keras.layers.Flatten()(inputs)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(hidden)
    return SelfTrainingClassifier(inputs, outputs)
