"""A generated ultrasound-like cine: the same burned-in text on every frame, moving speckle
and anatomy in the middle. For the cine benchmark (`manage.py bench_pipeline --cine`) and the
tests of static-overlay reuse and bounded memory.

    cine_frame(index, height, width) -> (H, W, 3) uint8
    cine_dicom(frames, height, width, jpeg=True) -> bytes   # a multi-frame DICOM file

Frames are made and encoded one at a time, so generating a 300-frame cine never holds more
than one decoded frame.
"""

from __future__ import annotations

import io
from typing import Any

import cv2
import numpy as np

TEXT_LINES = ("DOE^JANE  MRN 0012345", "DOB 1970-01-01  ST MARY HOSP")
FOOTER = "US  C5-1  12.0cm  GAIN 54"


def cine_frame(index: int, height: int = 768, width: int = 1024) -> np.ndarray:
    """Frame `index`: a dark background, a speckled sector in the middle whose pattern and
    bright blob move from frame to frame, and the same white text at the top and bottom."""
    rng = np.random.default_rng(1000 + index)
    frame = np.full((height, width, 3), 12, dtype=np.uint8)
    top, bottom = int(height * 0.2), int(height * 0.82)
    left, right = int(width * 0.2), int(width * 0.8)
    speckle = rng.gamma(2.0, 28.0, (bottom - top, right - left)).clip(0, 200)
    yy, xx = np.mgrid[top:bottom, left:right]
    cx = left + (right - left) * (0.3 + 0.4 * (index % 20) / 20)
    blob = 90 * np.exp(-(((xx - cx) / 60.0) ** 2 + ((yy - (top + bottom) / 2) / 40.0) ** 2))
    grey = np.clip(speckle + blob, 0, 230).astype(np.uint8)
    frame[top:bottom, left:right] = grey[..., None]
    scale = max(height / 768, 0.35)
    for i, text in enumerate(TEXT_LINES):
        cv2.putText(
            frame,
            text,
            (int(16 * scale), int((34 + 30 * i) * scale)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.9 * scale,
            (255, 255, 255),
            max(1, int(2 * scale)),
            cv2.LINE_8,
        )
    cv2.putText(
        frame,
        FOOTER,
        (int(16 * scale), height - int(20 * scale)),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.8 * scale,
        (255, 255, 255),
        max(1, int(2 * scale)),
        cv2.LINE_8,
    )
    return frame


def cine_dicom(frames: int, height: int = 768, width: int = 1024, *, jpeg: bool = True) -> bytes:
    """A multi-frame ultrasound DICOM of `cine_frame`s: JPEG baseline (YBR_FULL_422, as
    ultrasound cines are usually stored) or uncompressed RGB."""
    from PIL import Image
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import (
        ExplicitVRLittleEndian,
        JPEGBaseline8Bit,
        UltrasoundMultiFrameImageStorage,
        generate_uid,
    )

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = JPEGBaseline8Bit if jpeg else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "DOE^JANE"
    ds.PatientID = "0012345"
    ds.Modality = "US"
    ds.Rows, ds.Columns = height, width
    ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 3
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if jpeg:
        ds.PhotometricInterpretation = "YBR_FULL_422"
        encoded = []
        for index in range(frames):
            buffer = io.BytesIO()
            Image.fromarray(cine_frame(index, height, width)).save(
                buffer, format="JPEG", quality=90
            )
            encoded.append(buffer.getvalue())
        ds.PixelData = encapsulate(encoded)
        ds["PixelData"].VR = "OB"
        ds.LossyImageCompression = "01"
    else:
        ds.PhotometricInterpretation = "RGB"
        ds.PixelData = b"".join(cine_frame(i, height, width).tobytes() for i in range(frames))
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def process_cine(data: bytes, detector: Any, *, with_dicom: bool = False) -> dict[str, Any]:
    """What the worker does with an uploaded cine, storage replaced by temporary files:
    decode (frames read one at a time), detect with static overlays reused, seal each region,
    fill, verify, and per frame seal the redacted pixels (`engine.crypto.sealed_frames`); the
    redacted and grid PNGs of frame 0, and of any later frame not shown as stored (the
    worker's other frames get theirs on request). With `with_dicom`, also the de-identified
    DICOM copy, written frame by frame into a file and encrypted from it, as the worker does.

    Returns stage timings (ms), the detector's counts and the process's peak RSS (MiB)."""
    import resource
    import tempfile
    import time

    from django.conf import settings

    from engine.crypto import envelope as crypto
    from engine.crypto.sealed_frames import SealedFramesWriter
    from engine.detection import pipeline
    from engine.intake.validation import validate_upload
    from engine.pixels.rendering import shown_as_stored
    from engine.pixels.restoration import encode_image
    from imaging.vault.pixels import DigestingImage

    deferred: list[str] = []

    timings: dict[str, float] = {}
    start = time.perf_counter()
    # CPU time of the process (every thread): on a shared, loaded machine the wall time of
    # one run depends on the others' jobs, the CPU time much less.
    cpu_start = time.process_time()
    with pipeline.timed(timings, "decode_ms"):
        # As the worker does: the header and the first frame checked here, every other frame
        # checked as the pipeline decodes it, and the pixels hashed on the way (its digest).
        image = DigestingImage(
            validate_upload(
                name="cine.dcm",
                data=data,
                max_bytes=settings.UPLOAD_MAX_BYTES,
                max_dicom_bytes=max(len(data), settings.UPLOAD_DICOM_MAX_BYTES),
                max_pixels=settings.UPLOAD_MAX_PIXELS,
                check_frames=False,
            )
        )
    key = crypto.new_data_key()
    shape, dtype = tuple(image.pixels.shape), image.pixels.dtype
    with tempfile.TemporaryDirectory() as folder:
        sealed_path = f"{folder}/redacted-pixels.enc"
        raw = open(f"{folder}/redacted.raw", "wb")  # noqa: SIM115 - closed below
        with open(sealed_path, "wb") as handle:
            sealed = SealedFramesWriter(handle, key, aad=b"bench", shape=shape, dtype=dtype)

            def sink(output: pipeline.FrameOutput) -> None:
                with pipeline.timed(timings, "store_ms"):
                    # As the worker does: a later frame shown as stored gets its PNGs on
                    # request (imaging.vault.derivatives), not here.
                    plain = output.index > 0 and shown_as_stored(
                        output.redacted_pixels, output.redacted_display
                    )
                    for kind in ("redacted", "grid"):
                        if plain and (kind == "redacted" or not output.has_leftovers):
                            deferred.append(kind)
                            continue
                        frame = output.redacted_display if kind == "redacted" else output.grid
                        with open(f"{folder}/{kind}-{output.index:04d}.png", "wb") as png:
                            png.write(encode_image(frame, "png"))
                    sealed.add(output.redacted_pixels)
                    raw.write(np.ascontiguousarray(output.redacted_pixels).data.cast("B"))

            result = pipeline.pipeline_run(
                image=image,
                data_key=key,
                scan_ref="bench",
                detector=detector,
                classes=settings.IMAGING_REDACT_CLASSES,
                padding=settings.IMAGING_BOX_PADDING,
                verify_rounds=settings.IMAGING_VERIFY_ROUNDS,
                verify_scope=settings.IMAGING_VERIFY_SCOPE,
                timings=timings,
                sink=sink,
            )
            sealed.close()
        raw.close()
        with pipeline.timed(timings, "decode_ms"):
            digest = image.digest()
        if with_dicom:
            from engine.crypto.sealed_frames import FileFrames
            from imaging.vault.identity import dicom_deidentify

            # As the worker does: frame by frame into a file, encrypted from it in chunks.
            with (
                pipeline.timed(timings, "dicom_ms"),
                open(f"{folder}/redacted.raw", "rb") as frames_file,
                open(f"{folder}/redacted.dcm", "w+b") as plain,
                open(f"{folder}/redacted.dcm.enc", "wb") as sealed_copy,
            ):
                dicom_deidentify(
                    data,
                    FileFrames(frames_file, shape=shape, dtype=dtype),
                    pixels_clean=True,
                    regions=len(result.regions),
                    out=plain,
                )
                crypto.encrypt_blob_file(key, plain, sealed_copy, aad=b"bench")
    timings["total_ms"] = (time.perf_counter() - start) * 1000.0
    timings["cpu_ms"] = (time.process_time() - cpu_start) * 1000.0
    return {
        "frames": int(shape[0]),
        "timings": {k: round(v, 1) for k, v in timings.items()},
        "regions": len(result.regions),
        "region_groups": result.metrics["region_groups"],
        "detector_calls": result.metrics["detector_calls"],
        "frames_detected": result.metrics["frames_detected"],
        "pixels_sha256": digest,
        "quality_reused": result.metrics.get("quality_reused", 0),
        "pngs_deferred": len(deferred),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
