"""Data-parallel training: the driver (`group.py`, the training task) and its workers (`worker.py`,
local processes or Ray actors started by `launchers.py`), where each trains under a tf.distribute
strategy (`placement.py`) with Keras's `fit` or, across workers, the step of `loop.py`."""
