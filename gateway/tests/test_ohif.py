"""The requests OHIF's DICOMweb data source makes (extensions/default DicomWebDataSource:
qido.js mapParams, series metadata, wadors frames with transfer-syntax=*, BulkDataURI,
rendered and thumbnail), each with the exact query and Accept header, against a live server.
OHIF itself is not available offline; these are the request shapes it sends."""

from __future__ import annotations

import io
import re
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image
from pydicom import dcmread
from pydicom.encaps import generate_frames

from audit.models import Action, AuditEvent
from gateway.tests import test_dicomweb
from gateway.tests.dicom_files import PHI
from imaging.models import Scan

pytestmark = pytest.mark.django_db(transaction=True)

# The two-instance study stored over STOW-RS by a technician and processed.
stored = test_dicomweb.stored

OHIF_FRAMES = "multipart/related; type=application/octet-stream; transfer-syntax=*"
OHIF_FRAMES_QUOTED = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


def parts(response: requests.Response) -> list[tuple[str, bytes]]:
    """(Content-Type, body) of each part of a multipart/related response."""
    boundary = re.search(r"boundary=\"?([^\";]+)", response.headers["Content-Type"])
    assert boundary is not None, response.headers["Content-Type"]
    found = []
    for chunk in response.content.split(b"--" + boundary.group(1).encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, body = chunk.partition(b"\r\n\r\n")
        kind = re.search(rb"Content-Type: *([^\r\n]+)", head, flags=re.IGNORECASE)
        found.append((kind.group(1).decode() if kind else "", body.removesuffix(b"\r\n")))
    return found


class Web:
    def __init__(self, server: Any, user: Any, password: str) -> None:
        self.base = f"{server.url}/dicomweb"
        self.auth = {"Authorization": f"Bearer {test_dicomweb.token(server, user, password)}"}

    def get(self, path: str, accept: str | None = None, **params: Any) -> requests.Response:
        headers = dict(self.auth)
        if accept is not None:
            headers["Accept"] = accept
        url = path if path.startswith("http") else f"{self.base}/{path}"
        return requests.get(url, headers=headers, params=params, timeout=60)


@pytest.fixture
def web(serial_live_server: Any, stored: Any, doctor: Any, password: str) -> Web:
    return Web(serial_live_server, doctor, password)


def _value(item: dict[str, Any], tag: str) -> Any:
    return item[tag]["Value"][0]


def test_the_study_list_as_ohif_asks(web: Web) -> None:
    everything = web.get("studies", "application/dicom+json").json()
    pseudonym = _value(everything[0], "00100020")
    name = _value(everything[0], "00100010")["Alphabetic"]
    ohif = {
        "limit": "101",
        "offset": "0",
        "fuzzymatching": "false",
        "includefield": "00081030,00080060,00080090,00100030",
    }
    response = web.get(
        "studies",
        "application/dicom+json",
        **ohif,
        PatientName=f"*{name[2:6].lower()}*",
        **{"00100020": f"*{pseudonym[1:5]}*"},
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/dicom+json"
    (study,) = response.json()
    # What OHIF's processResults reads.
    for tag in ("0020000D", "00080020", "00100020", "00100010", "00201208", "00080061"):
        assert tag in study, tag
    assert study["00201208"]["Value"] == [2]
    assert "00081190" in study  # RetrieveURL
    for value in PHI.values():
        assert value not in response.text
    # includefield=all is answered with every attribute kept; fuzzymatching=true is accepted.
    assert web.get("studies", includefield="all", fuzzymatching="true").json() == everything
    # Paging: offset past the end is an empty 204; StudyInstanceUID as OHIF joins a list.
    assert web.get("studies", **{**ohif, "offset": "1"}).status_code == 204
    uid = _value(study, "0020000D")
    listed = web.get("studies", StudyInstanceUID=f"1.2.3\\{uid}")
    assert [_value(s, "0020000D") for s in listed.json()] == [uid]
    # Modality filter (OHIF's ModalitiesInStudy), matching and not.
    modality = _value(study, "00080061")
    assert web.get("studies", ModalitiesInStudy=modality).status_code == 200
    assert web.get("studies", ModalitiesInStudy="ZZ").status_code == 204
    assert AuditEvent.objects.filter(action=Action.DICOMWEB_SEARCHED).count() >= 6


def test_series_metadata_frames_and_bulk_data_as_ohif_asks(web: Web, stored: Any) -> None:
    study_uid = _value(web.get("studies").json()[0], "0020000D")
    series = web.get(
        f"studies/{study_uid}/series", "application/dicom+json", includefield="0008103E,00080021"
    ).json()
    (one,) = series
    for tag in ("0020000D", "0020000E", "00080060", "00201209"):
        assert tag in one, tag
    series_uid = _value(one, "0020000E")

    metadata = web.get(
        f"studies/{study_uid}/series/{series_uid}/metadata", "application/dicom+json"
    )
    assert metadata.status_code == 200
    assert metadata.headers["Content-Type"] == "application/dicom+json"
    instances = metadata.json()
    assert len(instances) == 2
    for value in PHI.values():
        assert value not in metadata.text
    assert AuditEvent.objects.filter(action=Action.DICOMWEB_RETRIEVED).count() == 2

    for instance in instances:
        sop_uid = _value(instance, "00080018")
        path = f"studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"
        original = dcmread(io.BytesIO(parts(web.get(path))[0][1]))
        pixels = bytes(original.PixelData)
        for accept in (OHIF_FRAMES, OHIF_FRAMES_QUOTED):
            frames = web.get(f"{path}/frames/1", accept)
            assert frames.status_code == 200, frames.text
            assert frames.headers["Content-Type"].startswith(
                'multipart/related; type="application/octet-stream"; boundary='
            )
            ((kind, body),) = parts(frames)
            assert kind == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"
            assert body == pixels
        # Single part, as OHIF's `singlepart` option asks.
        single = web.get(f"{path}/frames/1", "application/octet-stream")
        assert single.status_code == 200 and single.content == pixels
        # Stored uncompressed: a JPEG part cannot be had.
        refused = web.get(f"{path}/frames/1", 'multipart/related; type="image/jpeg"')
        assert refused.status_code == 406
        assert refused.json()["error"]["code"] == "not_acceptable"

        # Pixel Data by reference: the BulkDataURI answers the frames.
        bulk = instance["7FE00010"]
        assert bulk["vr"] == "OW" and bulk["BulkDataURI"].endswith(f"{sop_uid}/bulk/7FE00010")
        by_reference = web.get(bulk["BulkDataURI"], OHIF_FRAMES)
        assert by_reference.status_code == 200
        assert [body for _, body in parts(by_reference)] == [pixels]
        assert web.get(f"{path}/bulk/00100010", OHIF_FRAMES).status_code == 404


@pytest.fixture
def rle_output(settings: Any) -> None:
    """Exports (and so DICOMweb) written in RLE Lossless: set before the study is stored."""
    settings.DICOM_OUTPUT_SYNTAX = "rle"


def test_compressed_frames_as_stored_or_decompressed(
    rle_output: None,
    web: Web,
    stored: Any,
) -> None:
    study_uid = _value(web.get("studies").json()[0], "0020000D")
    (instance, *_) = web.get(f"studies/{study_uid}/instances").json()
    path = (
        f"studies/{study_uid}/series/{_value(instance, '0020000E')}"
        f"/instances/{_value(instance, '00080018')}"
    )
    exported = dcmread(io.BytesIO(parts(web.get(path))[0][1]))
    assert exported.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.5"
    (encoded,) = generate_frames(exported.PixelData, number_of_frames=1)
    ((kind, body),) = parts(web.get(f"{path}/frames/1", OHIF_FRAMES))
    assert kind == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.5"
    assert body == encoded
    rle = 'multipart/related; type="image/x-dicom-rle"'
    ((kind, body),) = parts(web.get(f"{path}/frames/1", rle))
    assert kind == "image/x-dicom-rle; transfer-syntax=1.2.840.10008.1.2.5"
    assert body == encoded
    # No transfer syntax named: uncompressed, decoded on the way out.
    ((kind, body),) = parts(
        web.get(f"{path}/frames/1", 'multipart/related; type="application/octet-stream"')
    )
    assert kind == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"
    pixels = exported.pixel_array
    assert np.array_equal(np.frombuffer(body, dtype=pixels.dtype).reshape(pixels.shape), pixels)


def test_rendered_and_thumbnails(web: Web) -> None:
    study = web.get("studies").json()[0]
    study_uid = _value(study, "0020000D")
    (instance, *_) = web.get(f"studies/{study_uid}/instances").json()
    series_path = f"studies/{study_uid}/series/{_value(instance, '0020000E')}"
    path = f"{series_path}/instances/{_value(instance, '00080018')}"
    jpeg = web.get(f"{path}/rendered", "image/jpeg")
    assert jpeg.status_code == 200 and jpeg.headers["Content-Type"] == "image/jpeg"
    assert Image.open(io.BytesIO(jpeg.content)).format == "JPEG"
    assert web.get(f"{path}/rendered").content[:8] == b"\x89PNG\r\n\x1a\n"
    for level in (f"studies/{study_uid}", series_path, path):
        thumb = web.get(f"{level}/thumbnail", "image/jpeg")
        assert thumb.status_code == 200, (level, thumb.text)
        image = Image.open(io.BytesIO(thumb.content))
        assert image.format == "JPEG" and max(image.size) <= 128
    png = web.get(f"{path}/thumbnail", "image/png")
    assert png.headers["Content-Type"] == "image/png"
    assert web.get(f"{path}/rendered", "application/pdf").status_code == 406


def test_a_signed_in_browser_session_reads_like_ohif_on_the_same_origin(
    serial_live_server: Any,
    stored: Any,
    doctor: Any,
    password: str,
) -> None:
    session = requests.Session()
    session.get(f"{serial_live_server.url}/login/", timeout=30)
    session.post(
        f"{serial_live_server.url}/login/",
        data={
            "username": doctor.username,
            "password": password,
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
        },
        headers={"Referer": f"{serial_live_server.url}/login/"},
        timeout=30,
    )
    studies = session.get(
        f"{serial_live_server.url}/dicomweb/studies",
        headers={"Accept": "application/dicom+json"},
        timeout=30,
    )
    assert studies.status_code == 200 and len(studies.json()) == 1
    assert Scan.objects.count() == 2
