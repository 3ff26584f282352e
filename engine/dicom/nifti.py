"""A DICOM volume as NIfTI-1 bytes, in memory (the 3D view's input: NiiVue reads NIfTI).

    volume_geometry(headers, frames) -> VolumeGeometry    # spacing and patient axes
    nifti1_bytes(volume, affine, *, slope, intercept, description) -> bytes

Geometry. A (F, H, W) array of frames is written with x = column (fastest), y = row,
z = frame, so the bytes of the C-ordered array are the NIfTI data as they stand. The affine
maps those voxel indices to millimetres in NIfTI's RAS+ space, from the DICOM patient space
(LPS+): the row direction cosine times the column spacing, the column cosine times the row
spacing, the step between consecutive frames' Image Position (Patient), the first frame's
position as the origin, then x and y negated (LPS -> RAS). Frame positions come from the
slices' own Image Position (Patient) (a series, one header per frame) or from the per-frame
functional groups of an enhanced multi-frame. Without positions or orientation the affine
is the spacing alone (`oriented` False: the view then cannot tell left from right).

The header is written here (348 bytes + 4 bytes of empty extension flag, "n+1"): sform and
qform both "scanner", the qform's quaternion from the affine's rotation (qfac -1 for a
left-handed frame), units mm. No file is ever written: bytes in, bytes out.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# NIfTI-1 datatype codes and bits per voxel, by numpy dtype.
_DATATYPES: dict[str, tuple[int, int]] = {
    "uint8": (2, 8),
    "int16": (4, 16),
    "int32": (8, 32),
    "float32": (16, 32),
    "float64": (64, 64),
    "int8": (256, 8),
    "uint16": (512, 16),
    "uint32": (768, 32),
}
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_HEADER_SIZE = 348
_VOX_OFFSET = 352  # the header, then the 4-byte extension flag (no extensions)


@dataclass(frozen=True)
class VolumeGeometry:
    """Where the voxels of a (F, H, W) volume lie: `affine` (4x4, voxel (column, row, frame)
    -> RAS mm), `spacing` (column, row, frame) mm, `oriented` when taken from the patient
    geometry (positions and orientation) rather than the spacing alone."""

    affine: np.ndarray
    spacing: tuple[float, float, float]
    oriented: bool

    def left_is_low(self, axis: int) -> bool | None:
        """For an axis of the (F, H, W) array (0 frames, 1 rows, 2 columns): True when the
        patient's left lies at the low indices, False at the high ones, None when the axis
        does not run left-right (or the geometry is not oriented)."""
        if not self.oriented:
            return None
        column = {0: 2, 1: 1, 2: 0}[axis]
        direction = self.affine[:3, column]
        norm = float(np.linalg.norm(direction))
        if norm == 0.0 or abs(direction[0]) / norm < 0.5:
            return None
        # RAS: +x is the patient's right, so an index that grows toward +x starts at the left.
        return bool(direction[0] > 0)


def _floats(value: Any) -> list[float] | None:
    if value is None:
        return None
    try:
        return [float(v) for v in value]
    except (TypeError, ValueError):
        return None


def _first(*candidates: Any) -> Any:
    for candidate in candidates:
        if candidate is not None:
            return candidate
    return None


def _group(header: Any, sequence: str, item: str) -> Any:
    """`header.<sequence>[0].<item>[0]` or None."""
    outer = header.get(sequence) if header is not None else None
    if not outer:
        return None
    inner = outer[0].get(item)
    return inner[0] if inner else None


def _frame_groups(header: Any, index: int, item: str) -> Any:
    per_frame = header.get("PerFrameFunctionalGroupsSequence")
    if not per_frame or index >= len(per_frame):
        return None
    inner = per_frame[index].get(item)
    return inner[0] if inner else None


def volume_geometry(headers: Sequence[Any], frames: int) -> VolumeGeometry:
    """The geometry of `frames` frames read from `headers`: one header per frame (a series of
    single-frame slices, in the volume's order) or one header for all (a multi-frame)."""
    first = headers[0]
    shared = "SharedFunctionalGroupsSequence"
    spacing_values = _floats(
        _first(
            first.get("PixelSpacing"),
            getattr(_group(first, shared, "PixelMeasuresSequence"), "PixelSpacing", None),
            getattr(_frame_groups(first, 0, "PixelMeasuresSequence"), "PixelSpacing", None),
            first.get("ImagerPixelSpacing"),
        )
    )
    row_spacing, column_spacing = (spacing_values or [1.0, 1.0])[:2]
    orientation = _floats(
        _first(
            first.get("ImageOrientationPatient"),
            getattr(
                _group(first, shared, "PlaneOrientationSequence"), "ImageOrientationPatient", None
            ),
            getattr(
                _frame_groups(first, 0, "PlaneOrientationSequence"),
                "ImageOrientationPatient",
                None,
            ),
        )
    )
    positions: list[list[float] | None]
    if len(headers) == frames and len(headers) > 1 or frames == 1:
        positions = [_floats(h.get("ImagePositionPatient")) for h in headers[:frames]]
    else:
        positions = [
            _floats(
                getattr(
                    _frame_groups(first, i, "PlanePositionSequence"), "ImagePositionPatient", None
                )
            )
            for i in range(frames)
        ]
    thickness = _floats(
        [
            _first(
                first.get("SpacingBetweenSlices"),
                first.get("SliceThickness"),
                getattr(
                    _group(first, shared, "PixelMeasuresSequence"), "SpacingBetweenSlices", None
                ),
                getattr(_group(first, shared, "PixelMeasuresSequence"), "SliceThickness", None),
                1.0,
            )
        ]
    )
    slice_spacing = (thickness or [1.0])[0] or 1.0
    known = [p for p in positions if p is not None and len(p) == 3]
    if orientation is None or len(orientation) != 6 or len(known) != frames:
        affine = np.diag([column_spacing, row_spacing, slice_spacing, 1.0])
        return VolumeGeometry(affine, (column_spacing, row_spacing, slice_spacing), False)
    row_cosine = np.array(orientation[:3])
    column_cosine = np.array(orientation[3:])
    origin = np.array(known[0])
    if frames > 1:
        step = (np.array(known[-1]) - origin) / (frames - 1)
        slice_spacing = float(np.linalg.norm(step)) or slice_spacing
    else:
        step = np.cross(row_cosine, column_cosine) * slice_spacing
    if not np.linalg.norm(step):
        step = np.cross(row_cosine, column_cosine) * slice_spacing
    lps = np.eye(4)
    lps[:3, 0] = row_cosine * column_spacing
    lps[:3, 1] = column_cosine * row_spacing
    lps[:3, 2] = step
    lps[:3, 3] = origin
    return VolumeGeometry(_LPS_TO_RAS @ lps, (column_spacing, row_spacing, slice_spacing), True)


def _quaternion(affine: np.ndarray) -> tuple[float, float, float, float]:
    """(b, c, d, qfac) of the affine's rotation, as NIfTI's mat44_to_quatern computes it."""
    rotation = np.array(affine[:3, :3], dtype=np.float64)
    norms = np.linalg.norm(rotation, axis=0)
    norms[norms == 0] = 1.0
    rotation = rotation / norms
    # The nearest orthonormal matrix (slices with a gantry tilt are not quite orthogonal).
    u, _, vt = np.linalg.svd(rotation)
    rotation = u @ vt
    qfac = 1.0
    if np.linalg.det(rotation) < 0:
        qfac = -1.0
        rotation[:, 2] = -rotation[:, 2]
    r = rotation
    a = r[0, 0] + r[1, 1] + r[2, 2] + 1.0
    if a > 0.5:
        a = 0.5 * np.sqrt(a)
        b = 0.25 * (r[2, 1] - r[1, 2]) / a
        c = 0.25 * (r[0, 2] - r[2, 0]) / a
        d = 0.25 * (r[1, 0] - r[0, 1]) / a
    else:
        xd = 1.0 + r[0, 0] - (r[1, 1] + r[2, 2])
        yd = 1.0 + r[1, 1] - (r[0, 0] + r[2, 2])
        zd = 1.0 + r[2, 2] - (r[0, 0] + r[1, 1])
        if xd > 1.0:
            b = 0.5 * np.sqrt(xd)
            c = 0.25 * (r[0, 1] + r[1, 0]) / b
            d = 0.25 * (r[0, 2] + r[2, 0]) / b
            a = 0.25 * (r[2, 1] - r[1, 2]) / b
        elif yd > 1.0:
            c = 0.5 * np.sqrt(yd)
            b = 0.25 * (r[0, 1] + r[1, 0]) / c
            d = 0.25 * (r[1, 2] + r[2, 1]) / c
            a = 0.25 * (r[0, 2] - r[2, 0]) / c
        else:
            d = 0.5 * np.sqrt(zd)
            b = 0.25 * (r[0, 2] + r[2, 0]) / d
            c = 0.25 * (r[1, 2] + r[2, 1]) / d
            a = 0.25 * (r[1, 0] - r[0, 1]) / d
        if a < 0:
            b, c, d = -b, -c, -d
    return float(b), float(c), float(d), qfac


def nifti1_bytes(
    volume: np.ndarray,
    affine: np.ndarray,
    *,
    slope: float = 1.0,
    intercept: float = 0.0,
    description: str = "",
) -> bytes:
    """A single-file NIfTI-1 (.nii) of a (F, H, W) volume; `slope` and `intercept` scale the
    stored values to real ones (scl_slope, scl_inter)."""
    data = np.ascontiguousarray(volume)
    if data.ndim != 3:
        raise ValueError(f"a volume is (frames, rows, columns), not {data.shape}")
    dtype = data.dtype.newbyteorder("<") if data.dtype.byteorder == ">" else data.dtype
    if dtype.name not in _DATATYPES:
        raise ValueError(f"no NIfTI-1 datatype for {data.dtype}")
    datatype, bitpix = _DATATYPES[dtype.name]
    frames, rows, columns = data.shape
    spacing = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
    b, c, d, qfac = _quaternion(affine)
    header = bytearray(_VOX_OFFSET)
    struct.pack_into("<i", header, 0, _HEADER_SIZE)
    header[38] = ord("r")  # regular
    struct.pack_into("<8h", header, 40, 3, columns, rows, frames, 1, 1, 1, 1)
    struct.pack_into("<hhh", header, 70, datatype, bitpix, 0)
    struct.pack_into("<8f", header, 76, qfac, *spacing, 0.0, 0.0, 0.0, 0.0)
    struct.pack_into("<f", header, 108, float(_VOX_OFFSET))
    struct.pack_into("<ff", header, 112, float(slope), float(intercept))
    header[123] = 2  # xyzt_units: mm
    text = description.encode("ascii", "replace")[:79]
    header[148 : 148 + len(text)] = text
    struct.pack_into("<hh", header, 252, 1, 1)  # qform_code, sform_code: scanner
    offset = affine[:3, 3]
    struct.pack_into("<6f", header, 256, b, c, d, *(float(v) for v in offset))
    for row in range(3):
        struct.pack_into("<4f", header, 280 + 16 * row, *(float(v) for v in affine[row]))
    header[344:348] = b"n+1\0"
    return bytes(header) + data.astype(dtype, copy=False).tobytes()
