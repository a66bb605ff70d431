"""TensorRT targets (being written)."""
