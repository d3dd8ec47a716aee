"""qute: QUTE early-exit-assisted ensembles, from Keras training to Cortex-M firmware."""

__version__ = "0.1.0"
