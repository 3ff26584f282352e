"""DICOMweb (PS3.18) for clinical users, under /dicomweb/.

    POST studies                                   STOW-RS (technicians): the upload service
    GET  studies | series | instances              QIDO-RS, also under a study / series
    GET  studies/{s}[/series/{se}[/instances/{i}]]             WADO-RS: multipart DICOM
    GET  .../metadata                              WADO-RS: DICOM JSON, no pixel data
    GET  .../instances/{i}/frames/{1,2,..}         WADO-RS: multipart frames
    GET  .../instances/{i}/rendered                WADO-RS: PNG of the redacted frame

Authentication: a JWT (Bearer) or a session. Technicians and doctors only; every query is
scoped with Scan.objects.visible_to(user) and finds only completed DICOM scans whose pixels
may leave (a required review confirmed). What is served is the de-identified, redacted
instance (imaging.services.deid.scan_export, audited as scan_viewed view=export); restored
originals stay on their own audited endpoint. Plain Django views: not part of the OpenAPI
schema of /api/.
"""

from __future__ import annotations

import io
import json
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import wraps
from typing import Any

from django.conf import settings
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import UID
from rest_framework.exceptions import AuthenticationFailed

from accounts.tokens import MedimgJWTAuthentication
from audit.models import Action
from audit.services import audit_record
from engine.errors import EngineError
from gateway.dicomweb_index import instances_index_missing
from gateway.models import DicomInstance
from gateway.receive import Refused, instance_receive
from imaging.models import Scan, ScanFormat, ScanStatus
from imaging.services.deid import scan_export
from imaging.vault.redacted import redacted_render, scan_header

DICOM_JSON = "application/dicom+json"
EXPLICIT_LITTLE = "1.2.840.10008.1.2.1"
OCTET_STREAM = "application/octet-stream"
# Binary value representations: served by BulkDataURI in metadata above this many bytes.
_BULK_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
BULK_THRESHOLD = 1024
MAX_RESULTS = 1000


class DicomwebError(Exception):
    """A refusal of this module's own (codes outside the API's vocabulary)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


def _user(request: HttpRequest) -> Any:
    """The JWT's user, else the session's; None when neither."""
    try:
        found = MedimgJWTAuthentication().authenticate(request)  # type: ignore[arg-type]
    except AuthenticationFailed:
        return None
    if found is not None:
        return found[0]
    user = getattr(request, "user", None)
    return user if user is not None and user.is_authenticated else None


def _clinical(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        user = _user(request)
        if user is None:
            response = _error(401, "not_authenticated", "Log in or send a Bearer token.")
            response["WWW-Authenticate"] = 'Bearer realm="dicomweb"'
            return response
        if not getattr(user, "is_clinical", False):
            return _error(403, "permission_denied", "DICOMweb is for technicians and doctors.")
        request.user = user
        try:
            return view(request, *args, **kwargs)
        except EngineError as refusal:
            return _error(refusal.status_code, str(refusal.code), refusal.message)
        except DicomwebError as refusal:
            return _error(refusal.status, refusal.code, refusal.message)

    return wrapper


# --- Scope and QIDO -------------------------------------------------------------------------


def _visible_scans(user: Any) -> QuerySet[Scan]:
    return (
        Scan.objects.visible_to(user)
        .filter(format=ScanFormat.DICOM, status=ScanStatus.COMPLETED)
        .filter(Q(needs_review=False) | Q(reviewed_at__isnull=False))
    )


def instances_visible(user: Any) -> QuerySet[DicomInstance]:
    scans = _visible_scans(user)
    instances_index_missing(scans.filter(dicom_instance__isnull=True)[:MAX_RESULTS])
    return DicomInstance.objects.filter(scan__in=scans.values("pk")).select_related("scan")


def _study_visible(user: Any, study_uid: str) -> bool:
    """A study-scoped search (studies/{study}/series|instances) names a resource: one the user
    cannot see answers 404, as retrieval does, not an empty 204 (issue 20: other departments
    get the same answer as for a study that does not exist)."""
    return instances_visible(user).filter(study_uid=study_uid).exists()


def _matching(instances: QuerySet[DicomInstance], params: Any) -> QuerySet[DicomInstance]:
    """The usual QIDO keys, by keyword or tag: UIDs (lists), Modality, StudyDate (ranges),
    InstanceNumber (the text keys: _attribute_matching). Other keys are ignored."""
    aliases = {
        "0020000D": "StudyInstanceUID",
        "0020000E": "SeriesInstanceUID",
        "00080018": "SOPInstanceUID",
        "00080016": "SOPClassUID",
        "00080060": "Modality",
        "00080061": "ModalitiesInStudy",
        "00080020": "StudyDate",
        "00200013": "InstanceNumber",
    }
    fields = {
        "StudyInstanceUID": "study_uid",
        "SeriesInstanceUID": "series_uid",
        "SOPInstanceUID": "sop_instance_uid",
        "SOPClassUID": "sop_class_uid",
        "Modality": "modality",
        "ModalitiesInStudy": "modality",
    }
    for raw_key, value in params.items():
        key = aliases.get(raw_key.upper(), raw_key)
        if not value:
            continue
        if key in fields:
            values = [v for v in value.replace("\\", ",").split(",") if v]
            instances = instances.filter(**{f"{fields[key]}__in": values})
        elif key == "StudyDate":
            start, dash, end = value.partition("-")
            if dash:
                if start:
                    instances = instances.filter(study_date__gte=start)
                if end:
                    instances = instances.filter(study_date__lte=end)
            else:
                instances = instances.filter(study_date=value)
        elif key == "InstanceNumber" and value.isdigit():
            instances = instances.filter(instance_number=int(value))
    return instances


# Attributes matched on the de-identified values the index keeps (DICOM wildcards * and ?;
# person names and descriptions case-insensitively, as OHIF's study list asks).
_TEXT_KEYS = {
    "PatientID": ("00100020", "study_json", False),
    "PatientName": ("00100010", "study_json", True),
    "AccessionNumber": ("00080050", "study_json", False),
    "StudyID": ("00200010", "study_json", False),
    "StudyDescription": ("00081030", "study_json", True),
    "SeriesDescription": ("0008103E", "series_json", True),
    "SeriesNumber": ("00200011", "series_json", False),
}
_TEXT_TAGS = {tag: keyword for keyword, (tag, _, _) in _TEXT_KEYS.items()}


def _json_value(item: dict[str, Any], tag: str) -> str:
    values = item.get(tag, {}).get("Value") or [""]
    value = values[0]
    if isinstance(value, dict):  # PN: {"Alphabetic": "..."}
        value = value.get("Alphabetic", "")
    return str(value)


def _wildcard(pattern: str, value: str, *, fold: bool) -> bool:
    if fold:
        pattern, value = pattern.casefold(), value.casefold()
    expression = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(expression, value, flags=re.DOTALL) is not None


def _attribute_matching(instances: Iterable[DicomInstance], params: Any) -> list[DicomInstance]:
    """The instances whose de-identified attributes match the text keys asked for."""
    wanted = []
    for raw_key, value in params.items():
        keyword = _TEXT_TAGS.get(raw_key.upper(), raw_key)
        if keyword in _TEXT_KEYS and value and value != "*":
            wanted.append((*_TEXT_KEYS[keyword], value))
    found = list(instances)
    for tag, field_name, fold, pattern in wanted:
        found = [
            i
            for i in found
            if _wildcard(pattern, _json_value(getattr(i, field_name), tag), fold=fold)
        ]
    return found


def _limit(params: Any) -> tuple[int, int]:
    def number(name: str, default: int) -> int:
        raw = params.get(name, "")
        return int(raw) if raw.isdigit() else default

    return number("offset", 0), min(number("limit", MAX_RESULTS), MAX_RESULTS)


def _json(items: list[dict[str, Any]]) -> HttpResponse:
    if not items:
        return HttpResponse(status=204)
    return HttpResponse(json.dumps(items), content_type=DICOM_JSON)


def _tag(keyword_tag: str, vr: str, values: list[Any]) -> dict[str, Any]:
    return {keyword_tag: {"vr": vr, "Value": values}}


def _base(request: HttpRequest) -> str:
    return request.build_absolute_uri("/dicomweb").rstrip("/")


def _study_rows(request: HttpRequest, instances: Iterable[DicomInstance]) -> list[dict]:
    studies: dict[str, dict[str, Any]] = {}
    for instance in instances:
        entry = studies.setdefault(
            instance.study_uid,
            {"json": dict(instance.study_json), "series": set(), "modalities": set(), "n": 0},
        )
        entry["series"].add(instance.series_uid)
        if instance.modality:
            entry["modalities"].add(instance.modality)
        entry["n"] += 1
    rows = []
    for uid, entry in studies.items():
        row = entry["json"]
        row.update(_tag("00080061", "CS", sorted(entry["modalities"])))
        row.update(_tag("00201206", "IS", [len(entry["series"])]))
        row.update(_tag("00201208", "IS", [entry["n"]]))
        row.update(_tag("00081190", "UR", [f"{_base(request)}/studies/{uid}"]))
        rows.append(row)
    return rows


def _series_rows(request: HttpRequest, instances: Iterable[DicomInstance]) -> list[dict]:
    series: dict[str, dict[str, Any]] = {}
    for instance in instances:
        entry = series.setdefault(
            instance.series_uid,
            {"json": {**instance.study_json, **instance.series_json}, "n": 0, "study": ""},
        )
        entry["study"] = instance.study_uid
        entry["n"] += 1
    rows = []
    for uid, entry in series.items():
        row = entry["json"]
        row.update(_tag("00201209", "IS", [entry["n"]]))
        row.update(
            _tag("00081190", "UR", [f"{_base(request)}/studies/{entry['study']}/series/{uid}"])
        )
        rows.append(row)
    return rows


def _instance_rows(request: HttpRequest, instances: Iterable[DicomInstance]) -> list[dict]:
    rows = []
    for instance in instances:
        row = {**instance.study_json, **instance.series_json, **instance.instance_json}
        row.update(_tag("00020010", "UI", [instance.transfer_syntax_uid]))
        url = (
            f"{_base(request)}/studies/{instance.study_uid}/series/{instance.series_uid}"
            f"/instances/{instance.sop_instance_uid}"
        )
        row.update(_tag("00081190", "UR", [url]))
        rows.append(row)
    return rows


def _audit_query(request: HttpRequest, level: str, count: int) -> None:
    audit_record(
        action=Action.DICOMWEB_SEARCHED,
        actor=request.user,
        request=request,
        target_type="scan",
        details={"level": level, "results": count},
    )


def _qido(
    request: HttpRequest, level: str, rows: Callable[..., list[dict]], **scope: str
) -> HttpResponse:
    instances = _matching(instances_visible(request.user).filter(**scope), request.GET)
    instances = _attribute_matching(instances, request.GET)
    offset, limit = _limit(request.GET)
    items = rows(request, instances)[offset : offset + limit]
    _audit_query(request, level, len(items))
    return _json(items)


# --- STOW-RS --------------------------------------------------------------------------------


def _multipart_parts(content_type: str, body: bytes) -> Iterator[tuple[dict[str, str], bytes]]:
    """The parts of a multipart/related body: (headers, content)."""
    boundary = ""
    for param in content_type.split(";")[1:]:
        name, _, value = param.strip().partition("=")
        if name.lower() == "boundary":
            boundary = value.strip().strip('"')
    if not boundary:
        raise DicomwebError(400, "invalid_multipart", "The body has no multipart boundary.")
    delimiter = b"--" + boundary.encode()
    chunks = body.split(delimiter)
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break
        head, separator, content = chunk.partition(b"\r\n\r\n")
        if not separator:
            continue
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip().lower()] = value.strip()
        if content.endswith(b"\r\n"):
            content = content[:-2]
        yield headers, content


def _stow_limit() -> int:
    return int(settings.UPLOAD_ARCHIVE_MAX_BYTES)


def _sent_uids(data: bytes) -> tuple[str, str]:
    """SOP Class and Instance UID of a part, as sent; empty when it cannot be read."""
    try:
        header = dcmread(io.BytesIO(data), stop_before_pixels=True)
        return str(header.get("SOPClassUID", "")), str(header.get("SOPInstanceUID", ""))
    except Exception:  # noqa: BLE001 - an unreadable part is answered without its UIDs
        return "", ""


def _reference(sop_class: str, sop_instance: str) -> dict[str, Any]:
    item: dict[str, Any] = {}
    if sop_class:
        item.update(_tag("00081150", "UI", [sop_class]))
    if sop_instance:
        item.update(_tag("00081155", "UI", [sop_instance]))
    return item


def _stow(request: HttpRequest, study_uid: str | None = None) -> HttpResponse:
    user = request.user
    if not getattr(user, "is_technician", False):
        return _error(403, "permission_denied", "Only lab technicians store images.")
    content_type = request.META.get("CONTENT_TYPE", "")
    if not content_type.lower().startswith("multipart/related"):
        return _error(
            415, "unsupported_media_type", "Send multipart/related; type=application/dicom."
        )
    limit = _stow_limit()
    if int(request.META.get("CONTENT_LENGTH") or 0) > limit:
        return _error(413, "file_too_large", "The request is larger than the upload limit.")
    body = request.read(limit + 1)
    if len(body) > limit:
        return _error(413, "file_too_large", "The request is larger than the upload limit.")
    referenced: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    source = {"protocol": "stow"}
    for headers, content in _multipart_parts(content_type, body):
        part_type = headers.get("content-type", "application/dicom").split(";")[0].strip()
        if part_type.lower() != "application/dicom":
            failed.append({"status": 0xC000, "uids": ("", "")})
            continue
        uids = _sent_uids(content)
        try:
            scan = instance_receive(data=content, uploaded_by=user, source=source, request=request)
        except Refused as refusal:
            failed.append({"status": refusal.status, "uids": uids})
            continue
        referenced.append({"scan": scan.pk, "uids": uids})
    response: dict[str, Any] = {}
    if referenced:
        response.update(
            _tag(
                "00081199",
                "SQ",
                # The UIDs as sent (the sender's own): the de-identified ones exist once the
                # scan is processed, and QIDO finds them then.
                [_reference(*entry["uids"]) for entry in referenced],
            )
        )
    if failed:
        response.update(
            _tag(
                "00081198",
                "SQ",
                [
                    {**_reference(*entry["uids"]), **_tag("00081197", "US", [entry["status"]])}
                    for entry in failed
                ],
            )
        )
    if not referenced and not failed:
        return _error(400, "no_files", "The body holds no DICOM part.")
    status = 200 if not failed else (202 if referenced else 409)
    return HttpResponse(json.dumps(response), content_type=DICOM_JSON, status=status)


# --- WADO-RS --------------------------------------------------------------------------------


def _instances(request: HttpRequest, **scope: str) -> list[DicomInstance]:
    instances = list(instances_visible(request.user).filter(**scope)[:MAX_RESULTS])
    if not instances:
        raise DicomwebError(404, "not_found", "No such study, series or instance.")
    return instances


def _multipart(parts: Iterable[bytes], part_type: str, extra: str = "") -> HttpResponse:
    boundary = uuid.uuid4().hex
    chunks = []
    for part in parts:
        chunks.append(f"--{boundary}\r\nContent-Type: {part_type}{extra}\r\n\r\n".encode())
        chunks.append(part)
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    response = HttpResponse(b"".join(chunks))
    response["Content-Type"] = f'multipart/related; type="{part_type}"; boundary={boundary}'
    return response


def _exported(request: HttpRequest, instance: DicomInstance) -> bytes:
    return scan_export(scan=instance.scan, actor=request.user, request=request).content


def _retrieve(request: HttpRequest, **scope: str) -> HttpResponse:
    instances = _instances(request, **scope)
    return _multipart((_exported(request, i) for i in instances), "application/dicom")


def _pixel_vr(header: Dataset) -> str | None:
    """Pixel Data's VR as the export writes it (PS3.5 8.2); None for an instance without
    pixels."""
    if "Rows" not in header:
        return None
    meta = getattr(header, "file_meta", None)
    syntax = str(getattr(meta, "TransferSyntaxUID", "") or EXPLICIT_LITTLE)
    if UID(syntax).is_encapsulated or int(header.get("BitsAllocated", 8) or 8) <= 8:
        return "OB"
    return "OW"


def _metadata(request: HttpRequest, **scope: str) -> HttpResponse:
    instances = _instances(request, **scope)
    items = []
    for instance in instances:
        header = scan_header(instance.scan)
        header.pop("PixelData", None)  # scan_header reads up to it; served by reference
        pixel_vr = _pixel_vr(header)
        item = header.to_json_dict()
        bulk = (
            f"{_base(request)}/studies/{instance.study_uid}/series/{instance.series_uid}"
            f"/instances/{instance.sop_instance_uid}/bulk"
        )
        # Large binary values by reference (OHIF's bulkDataURI), fetched from bulk/{tag}.
        for key, value in item.items():
            inline = value.get("InlineBinary")
            if value.get("vr") in _BULK_VRS and inline and len(inline) * 3 // 4 > BULK_THRESHOLD:
                item[key] = {"vr": value["vr"], "BulkDataURI": f"{bulk}/{key}"}
        if pixel_vr is not None:
            item["7FE00010"] = {"vr": pixel_vr, "BulkDataURI": f"{bulk}/7FE00010"}
        meta = getattr(header, "file_meta", None)
        if meta is not None and "TransferSyntaxUID" in meta:
            item.update(_tag("00020010", "UI", [str(meta.TransferSyntaxUID)]))
        items.append(item)
        audit_record(
            action=Action.DICOMWEB_RETRIEVED,
            actor=request.user,
            target=instance.scan,
            request=request,
            details={"part": "metadata"},
        )
    return HttpResponse(json.dumps(items), content_type=DICOM_JSON)


_COMPRESSED_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.5": "image/x-dicom-rle",
}


def dataset_frames(dataset: Dataset) -> list[bytes]:
    """Each frame's bytes as stored: native pixel data cut by frame, or the encapsulated
    fragments joined per frame."""
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    syntax = UID(str(dataset.file_meta.TransferSyntaxUID))
    if syntax.is_encapsulated:
        return list(generate_frames(dataset.PixelData, number_of_frames=frames))
    data = bytes(dataset.PixelData)
    size = len(data) // frames
    return [data[n * size : (n + 1) * size] for n in range(frames)]


# --- Content negotiation (PS3.18 8.7) -------------------------------------------------------


class NotAcceptable(DicomwebError):
    def __init__(self, offered: str) -> None:
        super().__init__(406, "not_acceptable", f"The Accept header asks for none of: {offered}.")


def _accept(request: HttpRequest) -> list[tuple[str, dict[str, str]]]:
    """The Accept header's media ranges as (type, parameters), lower-cased, quotes removed;
    [("*/*", {})] when there is none."""
    ranges = []
    for item in request.META.get("HTTP_ACCEPT", "").split(","):
        media, *raw = (part.strip() for part in item.split(";"))
        if not media:
            continue
        params = {}
        for param in raw:
            name, _, value = param.partition("=")
            params[name.strip().lower()] = value.strip().strip('"')
        ranges.append((media.lower(), params))
    return ranges or [("*/*", {})]


@dataclass(frozen=True)
class _BulkChoice:
    """How frames or bulk data go out: multipart or one part, as stored or decompressed."""

    multipart: bool
    part_type: str
    syntax: str
    decompress: bool


def _bulk_choice(request: HttpRequest, stored_syntax: str) -> _BulkChoice:
    """What to send for an Accept header, given the frames' stored transfer syntax.

    OHIF asks `multipart/related; type="application/octet-stream"; transfer-syntax=*`: the
    frames as stored, their syntax in the part's Content-Type. Without transfer-syntax, or
    with Explicit VR Little Endian, octet-stream means uncompressed frames (decompressed
    when stored compressed). A compressed media type (image/jls, image/jp2, image/jpeg,
    image/x-dicom-rle) is served when the frames are stored in it."""
    compressed = UID(stored_syntax).is_encapsulated
    stored_type = _COMPRESSED_TYPES.get(stored_syntax, OCTET_STREAM)
    for media, params in _accept(request):
        if media in ("*/*", "multipart/*"):
            return _BulkChoice(True, stored_type, stored_syntax, False)
        if media == "multipart/related":
            multipart, part_type = True, params.get("type", OCTET_STREAM)
        elif media in (OCTET_STREAM, *_COMPRESSED_TYPES.values()):
            multipart, part_type = False, media
        else:
            continue
        wanted = params.get("transfer-syntax")
        if part_type in ("*/*", "*") and wanted in (None, "*", stored_syntax):
            return _BulkChoice(multipart, stored_type, stored_syntax, False)
        if part_type == OCTET_STREAM:
            if wanted == "*" or wanted == stored_syntax and not compressed:
                return _BulkChoice(multipart, OCTET_STREAM, stored_syntax, False)
            if wanted in (None, EXPLICIT_LITTLE):
                return _BulkChoice(multipart, OCTET_STREAM, EXPLICIT_LITTLE, compressed)
        elif part_type == stored_type and compressed and wanted in (None, "*", stored_syntax):
            return _BulkChoice(multipart, stored_type, stored_syntax, False)
    raise NotAcceptable(
        f'multipart/related; type="{stored_type}"; transfer-syntax={stored_syntax}'
        + ("" if not compressed else f' or type="{OCTET_STREAM}" (decompressed)')
    )


def _bulk_response(choice: _BulkChoice, parts: list[bytes]) -> HttpResponse:
    extra = f"; transfer-syntax={choice.syntax}"
    if choice.multipart:
        return _multipart(parts, choice.part_type, extra)
    if len(parts) != 1:
        raise NotAcceptable("multipart/related (more than one part)")
    response = HttpResponse(parts[0])
    response["Content-Type"] = f"{choice.part_type}{extra}"
    return response


def _exported_frames(request: HttpRequest, instance: DicomInstance) -> tuple[Dataset, str]:
    dataset = dcmread(io.BytesIO(_exported(request, instance)))
    return dataset, str(dataset.file_meta.TransferSyntaxUID)


def _chosen_frames(dataset: Dataset, choice: _BulkChoice) -> list[bytes]:
    if choice.decompress:
        dataset.decompress()
    return dataset_frames(dataset)


def _frames(request: HttpRequest, numbers: str, **scope: str) -> HttpResponse:
    try:
        wanted = [int(n) for n in numbers.split(",") if n.strip()]
    except ValueError:
        return _error(400, "invalid_frame", "Frames are 1-based numbers, comma-separated.")
    instance = _instances(request, **scope)[0]
    dataset, syntax = _exported_frames(request, instance)
    choice = _bulk_choice(request, syntax)
    frames = _chosen_frames(dataset, choice)
    if not wanted or any(n < 1 or n > len(frames) for n in wanted):
        return _error(404, "invalid_frame", f"Frames are numbered 1 to {len(frames)}.")
    return _bulk_response(choice, [frames[n - 1] for n in wanted])


def _bulk(request: HttpRequest, tag: str, **scope: str) -> HttpResponse:
    """A top-level binary element named in the metadata's BulkDataURI: Pixel Data as its
    frames (one part each), anything else as one part."""
    if not re.fullmatch(r"[0-9A-Fa-f]{8}", tag):
        return _error(404, "not_found", "Bulk data is named by an 8-digit hexadecimal tag.")
    instance = _instances(request, **scope)[0]
    dataset, syntax = _exported_frames(request, instance)
    number = int(tag, 16)
    if number == 0x7FE00010:
        choice = _bulk_choice(request, syntax)
        return _bulk_response(choice, _chosen_frames(dataset, choice))
    element = dataset.get(number)
    if element is None or element.VR not in _BULK_VRS or element.value is None:
        return _error(404, "not_found", "No bulk data element with this tag.")
    choice = _bulk_choice(request, EXPLICIT_LITTLE)
    return _bulk_response(choice, [bytes(element.value)])


_IMAGE_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG"}


def _image_type(request: HttpRequest, default: str) -> str:
    for media, _ in _accept(request):
        if media in _IMAGE_TYPES:
            return media
        if media in ("*/*", "image/*"):
            return default
    raise NotAcceptable("image/png, image/jpeg")


def _image(array: Any, media: str, *, size: int | None = None) -> HttpResponse:
    image = Image.fromarray(array)
    if size is not None:
        image.thumbnail((size, size))
    if media == "image/jpeg" and image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    out = io.BytesIO()
    image.save(
        out, format=_IMAGE_TYPES[media], **({"quality": 90} if media == "image/jpeg" else {})
    )
    return HttpResponse(out.getvalue(), content_type=media)


def _rendered(request: HttpRequest, **scope: str) -> HttpResponse:
    media = _image_type(request, "image/png")
    instance = _instances(request, **scope)[0]
    scan_export(scan=instance.scan, actor=request.user, request=request)  # audited, checked
    frame = request.GET.get("frame", "1")
    index = int(frame) - 1 if frame.isdigit() else 0
    if not 0 <= index < instance.scan.frames:
        return _error(404, "invalid_frame", f"Frames are numbered 1 to {instance.scan.frames}.")
    return _image(redacted_render(instance.scan, index, None), media)


THUMBNAIL_SIZE = 128


def _thumbnail(request: HttpRequest, **scope: str) -> HttpResponse:
    """The first instance's first frame (of the study, series or instance), redacted and
    scaled to fit THUMBNAIL_SIZE pixels."""
    media = _image_type(request, "image/jpeg")
    instance = _instances(request, **scope)[0]
    scan_export(scan=instance.scan, actor=request.user, request=request)  # audited, checked
    return _image(redacted_render(instance.scan, 0, None), media, size=THUMBNAIL_SIZE)


# --- Views ----------------------------------------------------------------------------------


@csrf_exempt
@_clinical
def studies(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        if request.META.get("HTTP_AUTHORIZATION", "")[:7].lower() != "bearer ":
            # A session's POST carries its CSRF token, as the API's SessionAuthentication asks.
            refused = CsrfViewMiddleware(lambda r: HttpResponse()).process_view(
                request, None, (), {}
            )
            if refused is not None:
                return _error(403, "csrf_failed", "CSRF check failed: send the CSRF token.")
        return _stow(request)
    if request.method != "GET":
        return _error(405, "method_not_allowed", "GET or POST.")
    return _qido(request, "study", _study_rows)


@_clinical
def series(request: HttpRequest, study: str | None = None) -> HttpResponse:
    if study and not _study_visible(request.user, study):
        return _error(404, "not_found", "No such study.")
    scope = {"study_uid": study} if study else {}
    return _qido(request, "series", _series_rows, **scope)


@_clinical
def instances(
    request: HttpRequest, study: str | None = None, series: str | None = None
) -> HttpResponse:
    if study and not _study_visible(request.user, study):
        return _error(404, "not_found", "No such study.")
    scope = {"study_uid": study} if study else {}
    if series:
        scope["series_uid"] = series
    return _qido(request, "instance", _instance_rows, **scope)


@_clinical
def retrieve(
    request: HttpRequest, study: str, series: str | None = None, instance: str | None = None
) -> HttpResponse:
    return _retrieve(request, **_scope(study, series, instance))


@_clinical
def metadata(
    request: HttpRequest, study: str, series: str | None = None, instance: str | None = None
) -> HttpResponse:
    return _metadata(request, **_scope(study, series, instance))


@_clinical
def frames(
    request: HttpRequest, study: str, series: str, instance: str, numbers: str
) -> HttpResponse:
    return _frames(request, numbers, **_scope(study, series, instance))


@_clinical
def rendered(request: HttpRequest, study: str, series: str, instance: str) -> HttpResponse:
    return _rendered(request, **_scope(study, series, instance))


@_clinical
def thumbnail(
    request: HttpRequest, study: str, series: str | None = None, instance: str | None = None
) -> HttpResponse:
    return _thumbnail(request, **_scope(study, series, instance))


@_clinical
def bulk(request: HttpRequest, study: str, series: str, instance: str, tag: str) -> HttpResponse:
    return _bulk(request, tag, **_scope(study, series, instance))


def _scope(study: str, series: str | None, instance: str | None) -> dict[str, str]:
    scope = {"study_uid": study}
    if series:
        scope["series_uid"] = series
    if instance:
        scope["sop_instance_uid"] = instance
    return scope
