"""OpenVINO targets (being written)."""
