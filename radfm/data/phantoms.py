"""Synthetic phantoms: an offline dataset a small model can learn, fully determined by a seed.

Each case is one scan of one of four modalities with a modality-specific background:

- ``X-ray`` (2D, 128×128 PNG): dark surround, bright chest wall, two grey lung fields,
  bright spine;
- ``ultrasound`` (2D, 128×128 PNG): a speckled fan-shaped sector on black;
- ``CT`` (3D, 64×64×16 NIfTI): an elliptical body with a bright rim and a bright spine;
- ``MRI`` (3D, 64×64×16 NIfTI): a head with a bright skull ring and grey/white matter.

It holds 0–3 lesions, each in its own quadrant. A lesion has a shape (``sphere``,
``ellipsoid``, ``cube``), a brightness (``bright`` = diagnosis ``mass``, ``dark`` =
diagnosis ``cyst``), a size (``small``, ``large``) and a location ``"{left|right}
{upper|lower}"``: left/right = first/second half of the image columns (NIfTI voxel axis i),
upper/lower = first/second half of the rows (NIfTI voxel axis j); 3D lesions sit around the
middle slices.

Written files: ``images/`` (PNG, gzip NIfTI with fixed mtime: same seed -> same bytes),
``{train,val,test}.jsonl`` manifests (tasks: modality_open, modality_inductive,
diagnosis_inductive balanced per split, vqa count/location/shape, report, rationale) and
``cases.jsonl`` with the ground truth of every case.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from radfm.data import tasks
from radfm.data.manifest import ImageRef, Sample

MODALITIES_2D = ("X-ray", "ultrasound")
MODALITIES_3D = ("CT", "MRI")
MODALITIES = MODALITIES_2D + MODALITIES_3D
SHAPES = ("sphere", "ellipsoid", "cube")
DISEASE_OF = {"bright": "mass", "dark": "cyst"}
DISEASES = ("mass", "cyst")
QUADRANTS = ("left upper", "right upper", "left lower", "right lower")  # canonical answer order
COUNT_WORDS = ("none", "one", "two", "three")
SIZE_2D = (128, 128)
SIZE_3D = (64, 64, 16)  # rows, columns, slices (written to NIfTI as [columns, rows, slices])
DATASET = "phantoms"
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)


@dataclass
class Lesion:
    location: str  # "left upper" ...
    shape: str
    brightness: str  # "bright" | "dark"
    size: str  # "small" | "large"

    @property
    def disease(self) -> str:
        return DISEASE_OF[self.brightness]

    def describe(self) -> str:
        """"a large bright sphere in the left upper region"."""
        return f"a {self.size} {self.brightness} {self.shape} in the {self.location} region"


@dataclass
class PhantomCase:
    id: str
    modality: str
    lesions: list[Lesion]
    image: str = ""  # path relative to the output folder
    split: str = "train"

    @property
    def is_3d(self) -> bool:
        return self.modality in MODALITIES_3D

    @property
    def diseases(self) -> list[str]:
        return sorted({les.disease for les in self.lesions}, key=DISEASES.index)


# ---------------------------------------------------------------- drawing (numpy, vectorised)

def _grid(shape: tuple[int, ...]) -> list[np.ndarray]:
    """Normalised coordinates in [0, 1) per axis, broadcastable to ``shape``."""
    axes = []
    for k, n in enumerate(shape):
        view = [1] * len(shape)
        view[k] = n
        axes.append(((np.arange(n, dtype=np.float32) + 0.5) / n).reshape(view))
    return axes


def _ellipse(rows, cols, cy, cx, ry, rx) -> np.ndarray:
    return ((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 <= 1.0


def _background(modality: str, rng: np.random.Generator) -> np.ndarray:
    """The modality's anatomy-like background, float32 in [0, 1]; 2D ``[H, W]`` or 3D ``[H, W, D]``."""
    shape = SIZE_3D if modality in MODALITIES_3D else SIZE_2D
    rows, cols = _grid(shape[:2])
    j = lambda scale: float(rng.uniform(-scale, scale))  # noqa: E731  small anatomical jitter
    img = np.zeros(shape[:2], np.float32)
    if modality == "X-ray":
        img[:] = 0.08
        img[_ellipse(rows, cols, 0.52, 0.5, 0.5 + j(0.02), 0.46 + j(0.02))] = 0.72
        for cx in (0.3, 0.7):
            img[_ellipse(rows, cols, 0.5 + j(0.02), cx + j(0.02), 0.36, 0.17)] = 0.45
        img[(np.abs(cols - 0.5) < 0.035) & (rows > 0.08)] = 0.88
        img += 0.04 * np.cos(rows * 60.0).astype(np.float32) * (img > 0.3)  # faint ribs
    elif modality == "ultrasound":
        angle = np.arctan2(cols - 0.5, rows + 0.1)
        radius = np.sqrt((rows + 0.1) ** 2 + (cols - 0.5) ** 2)
        sector = (np.abs(angle) < 0.62) & (radius > 0.2) & (radius < 1.02)
        speckle = rng.rayleigh(0.5, size=shape[:2]).astype(np.float32)
        img = np.where(sector, np.clip(0.45 * speckle / 0.63, 0, 0.8), 0.0).astype(np.float32)
        img = (img + np.roll(img, 1, 0) + np.roll(img, 1, 1) + np.roll(img, (1, 1), (0, 1))) / 4  # soften speckle
    elif modality == "CT":
        body = _ellipse(rows, cols, 0.5, 0.5, 0.44 + j(0.02), 0.47 + j(0.02))
        inner = _ellipse(rows, cols, 0.5, 0.5, 0.40, 0.43)
        img[body] = 0.9
        img[inner] = 0.5
        img[_ellipse(rows, cols, 0.86, 0.5, 0.05, 0.05)] = 0.95  # vertebra
    elif modality == "MRI":
        head = _ellipse(rows, cols, 0.5, 0.5, 0.46 + j(0.02), 0.40 + j(0.02))
        brain = _ellipse(rows, cols, 0.5, 0.5, 0.41, 0.35)
        img[head] = 0.85
        img[brain] = 0.42
        img[_ellipse(rows, cols, 0.5, 0.5, 0.25, 0.2)] = 0.55  # white matter
        img[_ellipse(rows, cols, 0.5, 0.5, 0.09, 0.04)] = 0.2  # ventricles
    else:
        raise ValueError(f"unknown phantom modality {modality!r}; choose from {MODALITIES}")
    if len(shape) == 3:
        depth = _grid(shape)[2]
        # the body narrows towards the ends of the volume
        fade = (1.0 - 0.25 * np.abs(depth - 0.5) * 2).astype(np.float32)
        img = img[:, :, None] * fade
    return img


_QUADRANT_CENTRE = {
    "left upper": (0.33, 0.33), "right upper": (0.33, 0.67),
    "left lower": (0.67, 0.33), "right lower": (0.67, 0.67),
}


def _lesion_mask(lesion: Lesion, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    coords = _grid(shape)
    cy, cx = _QUADRANT_CENTRE[lesion.location]
    cy += float(rng.uniform(-0.04, 0.04))
    cx += float(rng.uniform(-0.04, 0.04))
    r = (0.075 if lesion.size == "small" else 0.13) * float(rng.uniform(0.9, 1.1))
    ry, rx = (r * 0.65, r * 1.5) if lesion.shape == "ellipsoid" else (r, r)
    dy, dx = (coords[0] - cy) / ry, (coords[1] - cx) / rx
    if len(shape) == 3:
        rz = max(2.2 / shape[2], r * 1.6)  # at least ~4 slices thick
        dz = (coords[2] - 0.5) / rz
    else:
        dz = np.zeros(1, np.float32)
    if lesion.shape == "cube":
        return (np.abs(dy) <= 0.85) & (np.abs(dx) <= 0.85) & (np.abs(dz) <= 0.85)
    return dy ** 2 + dx ** 2 + dz ** 2 <= 1.0


def render_case(case: PhantomCase, rng: np.random.Generator) -> np.ndarray:
    """The case's image as uint8, ``[H, W]`` (2D) or ``[H, W, D]`` (3D)."""
    img = _background(case.modality, rng)
    for lesion in case.lesions:
        mask = _lesion_mask(lesion, img.shape, rng)
        img[mask] = 0.97 if lesion.brightness == "bright" else 0.03
    img = img + rng.normal(0.0, 0.025, size=img.shape).astype(np.float32)
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# ---------------------------------------------------------------- writers (byte-stable)

def write_png(path: Path, image: np.ndarray) -> None:
    """8-bit grey PNG; Pillow writes no time chunk, so bytes depend on pixels only."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())


def write_nifti_gz(path: Path, volume: np.ndarray, spacing=(2.0, 2.0, 4.0)) -> None:
    """uint8 NIfTI-1 gzip with mtime 0 (gzip would otherwise stamp the current time).

    ``volume`` is ``[rows, columns, slices]``; it is stored as voxel axes ``[i=column, j=row, k]``.
    """
    import nibabel as nib

    data = np.ascontiguousarray(volume.transpose(1, 0, 2))
    affine = np.diag([*spacing, 1.0]).astype(np.float64)
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    path.write_bytes(gzip.compress(img.to_bytes(), compresslevel=6, mtime=0))


# ---------------------------------------------------------------- cases and manifests

def draw_case(index: int, rng: np.random.Generator) -> PhantomCase:
    """Random modality and 0–3 lesions in distinct quadrants."""
    modality = MODALITIES[int(rng.integers(len(MODALITIES)))]
    n_lesions = int(rng.integers(0, 4))
    quadrants = rng.permutation(len(QUADRANTS))[:n_lesions]
    lesions = [
        Lesion(
            location=QUADRANTS[q],
            shape=SHAPES[int(rng.integers(len(SHAPES)))],
            brightness=("bright", "dark")[int(rng.integers(2))],
            size=("small", "large")[int(rng.integers(2))],
        )
        for q in sorted(quadrants)
    ]
    return PhantomCase(id=f"phantom_{index:05d}", modality=modality, lesions=lesions)


def findings_text(case: PhantomCase) -> str:
    if not case.lesions:
        return "No lesion is seen."
    return " ".join(les.describe()[0].upper() + les.describe()[1:] + "." for les in case.lesions)


def case_samples(case: PhantomCase, image_path: Path, rng: random.Random) -> list[Sample]:
    """Every per-case instruction sample except diagnosis (balanced over the split)."""
    images = [ImageRef(str(image_path), modality=case.modality, plane="axial" if case.is_3d else None)]
    split = case.split
    out = [
        tasks.modality_open(case.id, DATASET, images, case.modality, rng, split=split),
        tasks.modality_inductive(case.id, DATASET, images, case.modality, MODALITIES, rng, split=split),
    ]
    out[0].extra["closed_set"] = list(MODALITIES)
    out[1].extra["closed_set"] = ["yes", "no"]
    n = len(case.lesions)
    question = "How many lesions are there?"
    out.append(tasks.vqa(f"{case.id}:count", DATASET, images, question, COUNT_WORDS[n], rng, split=split,
                         question_type="count", closed_set=list(COUNT_WORDS)))
    if n == 1:
        les = case.lesions[0]
        out.append(tasks.vqa(f"{case.id}:location", DATASET, images, "Where is the lesion?", les.location, rng,
                             split=split, question_type="location", closed_set=list(QUADRANTS)))
        out.append(tasks.vqa(f"{case.id}:shape", DATASET, images, "What is the shape of the lesion?", les.shape, rng,
                             split=split, question_type="shape", closed_set=list(SHAPES)))
    elif n > 1:
        out.append(tasks.vqa(f"{case.id}:location", DATASET, images, "Where are the lesions?",
                             ", ".join(les.location for les in case.lesions), rng, split=split,
                             question_type="location", closed_set=None))
    impression = tasks.format_disease_list(case.diseases, "Normal.").rstrip(".")
    out.append(tasks.report(case.id, DATASET, images, findings_text(case), rng, impression=impression + ".", split=split))
    out.append(tasks.rationale(case.id, DATASET, images, findings_text(case),
                               ", ".join(case.diseases) if case.diseases else "normal", rng, split=split))
    return out


def assign_splits(n: int, seed: int, fractions=SPLIT_FRACTIONS) -> list[str]:
    """Seeded train/val/test assignment; every split gets at least one case when n >= 3."""
    order = np.random.default_rng([seed, 7]).permutation(n)
    n_val = max(1 if n >= 3 else 0, int(round(fractions[1] * n)))
    n_test = max(1 if n >= 3 else 0, int(round(fractions[2] * n)))
    splits = ["train"] * n
    for rank, idx in enumerate(order):
        if rank < n_val:
            splits[idx] = "val"
        elif rank < n_val + n_test:
            splits[idx] = "test"
    return splits


def make_phantoms(output: str | os.PathLike, n: int = 200, seed: int = 0, *, overwrite: bool = False,
                  progress: bool = True) -> dict:
    """Write ``n`` phantom cases and their manifests to ``output``; returns a summary dict.

    Built in a temporary sibling folder and renamed at the end, so an interrupted run
    leaves nothing half-written. An existing non-empty ``output`` needs ``overwrite=True``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    output = Path(output)
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise FileExistsError(f"{output} exists and is not empty; pass overwrite=True to replace it")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.parent / f".{output.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "images").mkdir(parents=True)
    try:
        splits = assign_splits(n, seed)
        cases: list[PhantomCase] = []
        by_split: dict[str, list[Sample]] = {"train": [], "val": [], "test": []}
        diag_cases: dict[str, list[tasks.LabelledCase]] = {"train": [], "val": [], "test": []}
        iterator = range(n)
        if progress:
            from tqdm import tqdm

            from radfm.utils.progress import tqdm_options
            iterator = tqdm(iterator, desc="phantoms", unit="case", **tqdm_options())
        for i in iterator:
            rng = np.random.default_rng([seed, i])  # per case: independent of n and of other cases
            case = draw_case(i, rng)
            case.split = splits[i]
            pixels = render_case(case, rng)
            rel = f"images/{case.id}" + (".nii.gz" if case.is_3d else ".png")
            (write_nifti_gz if case.is_3d else write_png)(tmp / rel, pixels)
            case.image = rel
            cases.append(case)
            # the manifest stores paths relative to its own folder; final location = output
            image_path = output.resolve() / rel
            prompt_rng = random.Random(seed * 1_000_003 + i)
            by_split[case.split].extend(case_samples(case, image_path, prompt_rng))
            diag_cases[case.split].append(tasks.LabelledCase(case.id, DATASET, by_split[case.split][-1].images,
                                                             case.diseases, case.split))
        for split, labelled in diag_cases.items():
            if labelled:
                for sample in tasks.diagnosis_inductive(labelled, DISEASES, random.Random(f"{seed}-{split}-diagnosis")):
                    sample.extra["closed_set"] = ["yes", "no"]
                    by_split[split].append(sample)
        counts = {}
        for split, samples in by_split.items():
            samples.sort(key=lambda s: s.id)
            # write as if the manifest were already in output/, then move the folder
            counts[split] = _write_relocated(samples, tmp / f"{split}.jsonl", output.resolve())
        lines = [json.dumps({**asdict(c), "diseases": c.diseases, "dims": 3 if c.is_3d else 2}) for c in cases]
        (tmp / "cases.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        if output.exists():
            shutil.rmtree(output)
        os.replace(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"output": str(output), "cases": n, "samples": counts, "seed": seed}


def _write_relocated(samples: list[Sample], path: Path, final_dir: Path) -> int:
    """Write a manifest whose image paths are relative to ``final_dir`` (not ``path``'s folder)."""
    lines = [json.dumps(s.to_json(relative_to=final_dir), ensure_ascii=False) for s in samples]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return len(lines)


__all__ = ["make_phantoms", "render_case", "draw_case", "PhantomCase", "Lesion", "MODALITIES"]
