"""DICOM SEG output of a segmentation (highdicom), and reading one back.

    seg_from_labels(source, labels, classes, *, model_name, model_version) -> bytes
    labels_from_seg(seg_bytes, source) -> (labels, {segment number: label})

Plain module, bytes in and bytes out. `source` is the DE-IDENTIFIED source dataset (Part 10
bytes): a SEG copies the patient and study modules of its source, so what goes in is what
comes out. `labels` holds class indices, one frame per source frame ((H, W) for a single
frame, (F, H, W) for a multi-frame source); every foreground class becomes a segment with
the same number (background, class 0, is no segment). A multi-frame source needs patient
geometry (a frame of reference), see `seg_supported`. The SEG is BINARY, with frames kept
even where empty, so a viewer sees exactly the mask the app shows.

Sources made by simple writers (secondary captures) often lack Type 2 attributes a SEG must
copy (patient's birth date, study date...); they are added empty to a copy of the header, and
a missing study or series UID gets a fresh one, and a Pixel Spacing without slice thickness
or patient geometry is left out of the copy, so such a source still gets a valid SEG.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

# Copied from the source into the SEG's patient and study modules; Type 2 (may be empty).
_TYPE2_COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def _complete(ds: Any) -> Any:
    from pydicom.uid import generate_uid

    for keyword in _TYPE2_COPIED:
        if keyword not in ds:
            setattr(ds, keyword, "")
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
        if not ds.get(keyword):
            setattr(ds, keyword, generate_uid())
    if not ds.get("FrameOfReferenceUID") and not ds.get("SliceThickness") and "PixelSpacing" in ds:
        # highdicom would copy a Pixel Measures item with no Slice Thickness, which readers
        # (highdicom's own) refuse. Without patient geometry the SEG is placed pixel for pixel
        # on its source anyway, and the spacing stays in the source.
        del ds.PixelSpacing
    return ds


def seg_supported(ds: Any) -> bool:
    """Whether a SEG can say which frame is which: one frame, or a frame of reference.

    highdicom places a multi-frame SEG by the source's patient geometry; without it (a
    secondary-capture clip, an ultrasound loop) every frame would land on one location.
    """
    return int(ds.get("NumberOfFrames", 1) or 1) == 1 or bool(ds.get("FrameOfReferenceUID"))


def _descriptions(classes: dict[int, str], model_name: str, model_version: str) -> list[Any]:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(
        name=model_name[:64],
        version=model_version[:64] or "1",
        family=codes.cid7162.ArtificialIntelligence,
    )
    return [
        hd.seg.SegmentDescription(
            segment_number=k,
            segment_label=classes[k][:64],
            # A generic "tissue" code: models name their classes freely; the label says which.
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for k in sorted(classes)
        if k != 0
    ]


def seg_from_labels(
    source: bytes | list[bytes],
    labels: np.ndarray,
    classes: dict[int, str],
    *,
    model_name: str,
    model_version: str = "1",
) -> bytes:
    """A DICOM SEG (Part 10 bytes) of `labels` referencing `source`: one dataset, or the
    single-frame slices of one series in the order of `labels`' first axis."""
    import highdicom as hd
    import pydicom

    sources = [source] if isinstance(source, bytes) else list(source)
    datasets = [_complete(pydicom.dcmread(io.BytesIO(data))) for data in sources]
    ds = datasets[0]
    frames = int(ds.get("NumberOfFrames", 1) or 1) if len(datasets) == 1 else len(datasets)
    array = np.asarray(labels)
    if array.ndim == 2:
        array = array[None]
    if array.shape != (frames, int(ds.Rows), int(ds.Columns)):
        raise ValueError(f"labels {array.shape} do not match the source's frames")
    if frames > 1 and not all(seg_supported(d) and d.get("FrameOfReferenceUID") for d in datasets):
        raise ValueError("several frames without patient geometry have no SEG form")
    present = [k for k in sorted(classes) if k != 0]
    if not present:
        raise ValueError("a model with no foreground class has nothing to put in a SEG")
    seg = hd.seg.Segmentation(
        source_images=datasets,
        pixel_array=array.astype(np.uint8) if frames > 1 else array[0].astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=_descriptions(classes, model_name, model_version),
        series_instance_uid=hd.UID(),
        series_number=900,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="medimg",
        manufacturer_model_name=model_name[:64],
        software_versions=model_version[:64] or "1",
        device_serial_number="0",
        series_description=f"Segmentation: {model_name}"[:64],
        omit_empty_frames=False,
    )
    if not ds.get("FrameOfReferenceUID") and "PatientOrientation" not in seg:
        # General Image: Type 2C when the SEG has no patient geometry (dciodvfy checks it).
        seg.PatientOrientation = ds.get("PatientOrientation", "")
    buffer = io.BytesIO()
    seg.save_as(buffer)
    return buffer.getvalue()


def labels_from_seg(
    seg_bytes: bytes, source: bytes | list[bytes]
) -> tuple[np.ndarray, dict[int, str]]:
    """Read a SEG back: (F, H, W) class indices for `source`'s frames (or for the slices of
    a series, in the order given), and the segment labels."""
    import highdicom as hd
    import pydicom

    seg = hd.seg.segread(io.BytesIO(seg_bytes))
    sources = [source] if isinstance(source, bytes) else list(source)
    headers = [pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True) for data in sources]
    ds = headers[0]
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if len(headers) > 1:
        array = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[h.SOPInstanceUID for h in headers], combine_segments=True
        )
    elif frames > 1:
        array = seg.get_pixels_by_source_frame(
            source_sop_instance_uid=ds.SOPInstanceUID,
            source_frame_numbers=list(range(1, frames + 1)),
            combine_segments=True,
        )
    else:
        array = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[ds.SOPInstanceUID], combine_segments=True
        )
    names = {int(item.SegmentNumber): str(item.SegmentLabel) for item in seg.SegmentSequence}
    return np.asarray(array, dtype=np.uint8), names
