"""Plain-Python helpers of the RadFM Slicer module (no Slicer imports; tested in CI)."""
