"""unetq: train U-Net segmentation models, quantize them, measure the trade-offs on CPUs."""

import os

# TensorFlow 2.21's oneDNN custom ops corrupt the heap while training the xception U-Net on
# AVX-512/AMX CPUs ("free(): invalid pointer" after a grappler remapper error; reproduced with
# xception f8 at 128 px). Plain Eigen kernels are correct; set the variable to 1 to override.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

__version__ = "0.1.0"
