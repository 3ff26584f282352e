"""C-STORE in the common transfer syntaxes, as storescu sends them (no conversion): pydicom's
test files of each, given a Patient ID, arrive and are processed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from audit.models import AuditEvent, Outcome
from gateway.receive import ACTION_RECEIVED
from gateway.tests.conftest import storescu
from imaging.models import Scan, ScanStatus

pytestmark = pytest.mark.django_db(transaction=True)

# Each file with the storescu option that proposes its own syntax (storescu converts to an
# uncompressed one otherwise).
FILES = {
    "-xi": ("MR_small_implicit.dcm",),  # implicit VR little endian
    "-xb": ("MR_small_bigendian.dcm",),  # explicit VR big endian
    "-xd": ("image_dfl.dcm",),  # deflate
    "-xy": ("SC_rgb_jpeg_dcmtk.dcm",),  # JPEG baseline
    "-xx": ("JPEG-lossy.dcm",),  # JPEG extended (12-bit)
    "-xs": ("JPEG-LL.dcm",),  # JPEG lossless SV1
    "-xu": ("JPEGLSNearLossless_16.dcm",),  # JPEG-LS near-lossless
    "-xv": ("MR_small_jp2klossless.dcm",),  # JPEG 2000 lossless
    "-xr": ("MR_small_RLE.dcm",),  # RLE
}


def test_every_common_transfer_syntax_is_received_as_sent(
    listener: int, peer: Any, tmp_path: Path
) -> None:
    syntaxes, output, count = set(), "", 0
    for option, names in FILES.items():
        paths = []
        for name in names:
            ds = dcmread(get_testdata_file(name))
            ds.PatientID = f"GW-TS-{count}"
            # pydicom's MR_small files share one SOP Instance UID: a resend, to the gateway.
            ds.SOPInstanceUID = generate_uid()
            if "MediaStorageSOPInstanceUID" in ds.file_meta:
                ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            count += 1
            path = tmp_path / name
            ds.save_as(path)
            paths.append(path)
            syntaxes.add(str(ds.file_meta.TransferSyntaxUID))
        result = storescu(listener, *paths, options=(option,))
        output += result.stdout + result.stderr

    for line in output.splitlines():  # dcmtk names the syntax twice when it converts nothing
        if "Converting transfer syntax:" in line:
            before, after = line.split(":", 2)[2].split(" -> ")
            assert before.strip() == after.strip(), line
    assert output.count("Received Store Response (Success)") == count, output[-4000:]
    received = AuditEvent.objects.filter(action=ACTION_RECEIVED, outcome=Outcome.SUCCESS)
    assert {e.details["transfer_syntax"] for e in received} == syntaxes
    scans = Scan.objects.all()
    assert scans.count() == count
    assert {s.status for s in scans} == {ScanStatus.COMPLETED}, [
        (s.patient_id, s.failure_reason) for s in scans
    ]
