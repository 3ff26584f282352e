"""Test images with burned-in text, in every format the upload accepts, and a classical
text detector for them.

`bright_text_detector` finds near-white ink (as scanners burn in annotations) with a
threshold and connected components. Tests about storage, crypto, restore, roles and tasks
use it through `settings.IMAGING_DETECTOR`: they then do not depend on the YOLO weights or
its speed on a CPU, and they know exactly where the text is. The YOLO detector itself is
tested on real images in test_pipeline.py.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")
INK = 255  # burned-in text is drawn at full white; backgrounds stay below INK_THRESHOLD
INK_THRESHOLD = 250


@dataclass(frozen=True)
class Detection:
    box: tuple[int, int, int, int]
    label: str
    confidence: float


def bright_text_detector(frame: np.ndarray) -> list[Detection]:
    """Boxes around lines of near-white ink in a (H, W[, 3]) uint8 frame."""
    grey = frame if frame.ndim == 2 else frame.min(axis=2)
    mask = (grey >= INK_THRESHOLD).astype(np.uint8)
    # Join the letters of one line into one component.
    mask = cv2.dilate(mask, np.ones((3, 15), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    found = []
    for i in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[i])
        if area < 40 or h < 6:
            continue
        found.append(Detection(box=(x, y, x + w, y + h), label="phi_text", confidence=0.99))
    return found


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if FONT.exists():
        return ImageFont.truetype(str(FONT), size)
    return ImageFont.load_default()


def text_image(
    width: int = 320,
    height: int = 240,
    *,
    lines: tuple[str, ...] = ("DOE^JANE  MRN 0012345", "DOB 1970-01-01"),
    channels: int = 3,
    seed: int = 0,
) -> np.ndarray:
    """A noisy, dark 'scan' (values below the ink threshold) with white text burned in."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = 60 + 60 * np.sin(xx / 23.0 + seed) * np.cos(yy / 31.0)
    noise = rng.normal(0, 12, size=(height, width))
    grey = np.clip(base + noise + 40, 0, 200).astype(np.uint8)
    image = Image.fromarray(grey).convert("RGB" if channels == 3 else "L")
    draw = ImageDraw.Draw(image)
    font = _font(max(12, height // 16))
    y = max(4, height // 40)
    for text in lines:
        draw.text((max(6, width // 40), y), text, fill=(INK,) * channels, font=font)
        y += max(16, height // 12)
    return np.asarray(image)


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(array: np.ndarray, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def dicom_bytes(frames: np.ndarray, *, photometric: str = "MONOCHROME2") -> bytes:
    """A minimal valid DICOM (Explicit VR Little Endian) holding `frames` (F, H, W[, 3])."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = "DOE^JANE"
    ds.PatientID = "0012345"
    ds.Modality = "OT"
    count, rows, columns = frames.shape[:3]
    ds.Rows, ds.Columns = rows, columns
    if count > 1:
        ds.NumberOfFrames = count
    ds.SamplesPerPixel = frames.shape[3] if frames.ndim == 4 else 1
    ds.PhotometricInterpretation = photometric
    if ds.SamplesPerPixel > 1:
        ds.PlanarConfiguration = 0
    bits = frames.dtype.itemsize * 8
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 1 if frames.dtype.kind == "i" else 0
    if bits > 8:
        # A fixed window, so the rendering does not depend on the image's percentiles.
        ds.WindowCenter = 2048
        ds.WindowWidth = 4096
    ds.PixelData = np.ascontiguousarray(frames).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def dicom16_text(frames: int = 1, width: int = 256, height: int = 192) -> tuple[bytes, np.ndarray]:
    """A 16-bit MONOCHROME2 DICOM whose text sits at the top of the value range."""
    stack = []
    for f in range(frames):
        grey = text_image(width, height, channels=1, seed=f).astype(np.uint16)
        # Spread to 12 bits, text at 4095: the rendering's percentile stretch keeps it white.
        stack.append(np.where(grey >= INK_THRESHOLD, 4095, grey * 8).astype(np.uint16))
    pixels = np.stack(stack)
    return dicom_bytes(pixels), pixels


def slow_bright_text_detector(frame: np.ndarray) -> list[Detection]:
    """The same detector, slowed down so a test can kill a worker in the middle of a task."""
    import time

    time.sleep(3.0)
    return bright_text_detector(frame)
