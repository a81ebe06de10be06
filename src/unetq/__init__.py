"""unetq: train U-Net segmentation models, quantize them, measure the trade-offs on CPUs."""

__version__ = "0.1.0"
