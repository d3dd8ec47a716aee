"""TensorFlow and Keras for the commands that train, quantize or evaluate, loaded quietly.

TensorFlow's C++ side prints a few lines to file descriptor 2 before its log level applies, so
the level alone does not silence them; only the commands that need TensorFlow pay for loading it.
"""

from __future__ import annotations

import os
import sys


def load_tensorflow() -> None:
    """Imports tensorflow and keras with file descriptor 2 pointed at /dev/null meanwhile."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            import keras  # noqa: F401
            import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
