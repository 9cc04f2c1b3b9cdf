"""MONAI transforms for RadFM preprocessing (no model imports)."""
