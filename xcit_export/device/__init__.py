"""The device side: bundles for a Jetson/RTX PC, device_check.pyz and the device-check commands."""
