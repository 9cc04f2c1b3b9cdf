"""Data: manifests, dataset adapters, prompt banks, task construction, RadMD filters,
weighted training sequences, 2D/3D batching and synthetic phantoms (see docs/data.md)."""

from radfm.data.manifest import ImageRef, ManifestError, Sample, load_manifest, write_manifest

__all__ = ["ImageRef", "ManifestError", "Sample", "load_manifest", "write_manifest"]
