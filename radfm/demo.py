"""Quick-start job (``make demo``, ``radfm demo``, ``python -m radfm.demo``).

Interim version, until the demo model exists: preprocess scans that ship with a fresh install
(pydicom's CT and MR slices and a small CT series folder) and print exactly what the model will receive.
"""

from __future__ import annotations

import sys
from pathlib import Path


def sample_scans() -> list[Path]:
    """Scans available offline on a fresh install: pydicom's bundled CT and MR slices (2D) and a
    five-slice CT series folder (3D) from its DICOMDIR test files."""
    import pydicom.data
    from pydicom.data import get_testdata_file

    series = Path(pydicom.data.__file__).parent / "test_files" / "dicomdirtests" / "98892001" / "CT5N"
    scans = [Path(get_testdata_file(name)) for name in ("CT_small.dcm", "MR_small.dcm")]
    return scans + ([series] if series.is_dir() else [])


def main(png_dir: str | None = None) -> None:
    """Preprocess the shipped sample scans and print the model inputs (shape, dtype, range, metadata).

    Args:
        png_dir: optional folder to write the middle slice of each model input as PNG.
    """
    from radfm.transforms import describe, preprocess_scan
    from radfm.transforms.preprocess import save_middle_slice_png

    print("RadFM quick start: preprocessing shipped sample scans (the demo model is not available yet)\n")
    for path in sample_scans():
        image = preprocess_scan(path)
        print(describe(image))
        if png_dir:
            print(f"middle slice:    {save_middle_slice_png(image, Path(png_dir) / (path.stem + '.png'))}")
        print()
    print("Each image enters the model as [3, H, W, D] float32 in [0, 1]: "
          "2D -> [3, 512, 512, 4], 3D -> [3, 256, 256, D'] (D' = multiple of 4 nearest D, in [4, 64]).")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
