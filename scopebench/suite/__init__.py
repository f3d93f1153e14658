"""The bench wiring: which images each stage uses, the scales (one config per analysis), the workbench."""
