"""Data layer: official SENSORIUM folders, the synthetic digital mouse, the zarr store, the input pipeline."""
