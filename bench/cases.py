"""The benchmark's images, the same for both systems: DICOM files with their ground truth.

- real: every image of the hand-checked test set (model/detector/testset/ground_truth.json),
  the annotated frame as a single-frame 8-bit DICOM (the pixels `load_frame` gives, which are
  what the boxes were drawn on) that keeps the source's header, so Presidio's
  `use_metadata=True` still sees the patient's name and ids;
- generated: size x size greyscale scans with a burned-in header line (name, MRN, birth date,
  institution, date) in DejaVu Sans, whose word boxes are the ground truth (phi_text), and the
  same values in the DICOM header.

Both systems read the same bytes from the same files and are scored by the same code
(model/detector/evaluate.py `score_image`).
"""

from __future__ import annotations

import copy
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from model.detector.backgrounds import package_file
from model.detector.testset import TestImage, TruthBox, load_frame, load_ground_truth

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
GENERATED_FIELDS = (
    ("PatientName", "DOE^JANE", "DOE, JANE"),
    ("PatientID", "0012345", "MRN 0012345"),
    ("PatientBirthDate", "19700101", "DOB 01/01/1970"),
    ("InstitutionName", "ST MARY HOSPITAL", "ST MARY HOSPITAL"),
    ("StudyDate", "20261121", "21/11/2026 14:03"),
)


@dataclass(frozen=True)
class Case:
    name: str
    dicom: bytes
    truth: TestImage
    shape: tuple[int, int]  # rows, columns


def _pixel_module(ds: pydicom.Dataset, frame: np.ndarray) -> None:
    """Replace the image pixel module of `ds` with an uncompressed 8-bit `frame`."""
    for tag in [t for t in list(ds.keys()) if t.group in (0x0028, 0x7FE0)]:
        del ds[tag]
    for keyword in ("FrameIncrementPointer", "FrameTime", "CineRate"):
        if keyword in ds:
            delattr(ds, keyword)
    colour = frame.ndim == 3
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = "RGB" if colour else "MONOCHROME2"
    if colour:
        ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = int(frame.shape[0]), int(frame.shape[1])
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.ascontiguousarray(frame, dtype=np.uint8).tobytes()
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian


def _to_bytes(ds: pydicom.Dataset) -> bytes:
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def real_cases() -> list[Case]:
    cases = []
    for truth in load_ground_truth():
        frame = load_frame(truth.package, truth.file, truth.frame)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            source = pydicom.dcmread(package_file(truth.package, truth.file))
        ds = copy.deepcopy(source)
        _pixel_module(ds, frame)
        cases.append(Case(truth.key, _to_bytes(ds), truth, frame.shape[:2]))
    return cases


def generated_frame(size: int, seed: int = 0) -> tuple[np.ndarray, list[TruthBox]]:
    """A scan-like greyscale frame with one burned-in header line, and its word boxes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = 60 + 45 * np.sin(xx / (size / 14)) * np.cos(yy / (size / 9))
    grey = np.clip(base + rng.normal(0, 8, (size, size)), 0, 190).astype(np.uint8)
    image = Image.fromarray(grey)
    draw = ImageDraw.Draw(image)
    font_size = max(12, size // 48)
    font = ImageFont.truetype(str(FONT), font_size)

    def bbox(at: tuple[int, int], word: str) -> tuple[int, int, int, int]:
        # Whole pixels for a FreeType font at a whole size (Pillow's types allow floats).
        x0, y0, x1, y1 = draw.textbbox(at, word, font=font)
        return int(x0), int(y0), int(x1), int(y1)

    boxes: list[TruthBox] = []
    x, y = size // 64, size // 64
    for _, _, shown in GENERATED_FIELDS:
        for word in shown.split(" "):
            x0, y0, x1, y1 = bbox((x, y), word)
            if x1 >= size:  # next line
                x, y = size // 64, y1 + size // 64
                x0, y0, x1, y1 = bbox((x, y), word)
            draw.text((x, y), word, fill=235, font=font)
            boxes.append(TruthBox("phi_text", x0, y0, x1, y1, word))
            x = x1 + font_size // 2
        x += font_size
    return np.asarray(image), boxes


def generated_case(size: int, seed: int = 0) -> Case:
    frame, boxes = generated_frame(size, seed)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "OT"
    for keyword, value, _ in GENERATED_FIELDS:
        setattr(ds, keyword, value)
    _pixel_module(ds, frame)
    truth = TestImage("generated", f"{size}x{size}", 0, tuple(boxes))
    return Case(f"generated:{size}x{size}", _to_bytes(ds), truth, frame.shape[:2])


def all_cases(sizes: tuple[int, ...] = (512, 1024, 2048), real: bool = True) -> list[Case]:
    cases = real_cases() if real else []
    return cases + [generated_case(size, seed=i) for i, size in enumerate(sizes)]
