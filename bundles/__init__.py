"""Data package ``radfm.bundles``: the MONAI bundles (``radfm/``, ``radfm_classification/``) shipped with the wheel.

No code lives here; ``radfm.utils.resources.bundle_dir(name)`` finds a bundle's folder.
"""
