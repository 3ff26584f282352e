"""Keyed pseudonyms: what the audit log stores instead of patient identifiers.

Admins read the audit log, and admins see no patient identifiers. So:

- a patient is named by its *reference*, `patient_reference(hospital_id)`: HMAC-SHA256 of the
  hospital id under a key derived from SECRET_KEY (Django's `salted_hmac`, salt
  "patients.Patient.reference"), first 12 hex digits. `Patient.reference` is this function;
  Django admin shows the same value.
- a search term (what a user typed into the patient search) is stored as
  `search_term_hash(term)`: HMAC-SHA256 under a key derived from SECRET_KEY with its own salt
  ("audit.search_term"), of the term stripped and case-folded, 16 hex digits. An
  investigator who has a hospital id hashes it the same way to find the events
  (audit.services.audit_find_patient_events); nobody can read the term back.

Neither value can be reversed without SECRET_KEY (a plain hash of a hospital id could be, by
hashing every possible id). Rotating SECRET_KEY changes every pseudonym: events written before
the rotation are then found only by the id itself, not by its new pseudonym.

Events written before pseudonyms existed hold the hospital id and clear search terms. Their
bytes are covered by the hash chain and are never changed; `pseudonymised_event` maps them at
read time for the audit browser, the audit API and Django admin. See docs/audit.md.

No ORM and no app imports here: the functions take plain values.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote

from django.urls import Resolver404, resolve
from django.utils.crypto import salted_hmac

REFERENCE_SALT = "patients.Patient.reference"
SEARCH_SALT = "audit.search_term"
REFERENCE_LENGTH = 12
SEARCH_HASH_LENGTH = 16
# The target type a patient record is logged under (the model name).
PATIENT_TARGET = "patient"
# Details keys that held a hospital id in events written before pseudonyms.
PATIENT_ID_KEYS = ("patient", "patient_id")
# What new events write instead: a reference, and the search term's keyed hash.
SEARCH_KEY = "search"
SEARCH_HASH_KEY = "search_hmac"
# A refused request's path (audit.middleware) names the patient when its URL does; the URL
# parameters that hold a hospital id.
PATH_KEY = "path"
PATIENT_PATH_KWARGS = ("patient_id",)
# Marks an event written with pseudonyms (in `details`, so it is covered by the hash).
MARK_KEY = "pseudonyms"
MARK_VERSION = 1


def patient_reference(hospital_id: str) -> str:
    """The keyed pseudonym of a hospital patient id (`Patient.reference`)."""
    digest = salted_hmac(REFERENCE_SALT, str(hospital_id), algorithm="sha256")
    return digest.hexdigest()[:REFERENCE_LENGTH]


def search_term_hash(term: str) -> str:
    """The keyed hash a search term is stored as; "" for an empty term."""
    text = (term or "").strip().casefold()
    if not text:
        return ""
    digest = salted_hmac(SEARCH_SALT, text, algorithm="sha256")
    return digest.hexdigest()[:SEARCH_HASH_LENGTH]


def path_pseudonymised(path: str) -> str:
    """A request path with the hospital id in it replaced by `patient-<reference>`.

    The path is matched against the URL conf; a path that matches no URL is returned as it
    is (a refused request reached a view, so its path matches one).
    """
    try:
        match = resolve(path)
    except (Resolver404, ValueError, TypeError):
        return path
    segments = path.split("/")
    for name in PATIENT_PATH_KWARGS:
        value = match.kwargs.get(name)
        if not isinstance(value, str) or not value:
            continue
        shown = f"patient-{patient_reference(value)}"
        segments = [
            shown
            if segment in (value, quote(value, safe="")) or unquote(segment) == value
            else segment
            for segment in segments
        ]
    return "/".join(segments)


def is_pseudonymised(details: Any) -> bool:
    return isinstance(details, dict) and details.get(MARK_KEY) == MARK_VERSION


def pseudonymised_fields(
    target_type: str, target_id: str, details: Any
) -> tuple[str, dict[str, Any]]:
    """(target_id, details) of one event as an admin may read them.

    New events (marked) are returned as stored. Older ones get the patient reference in place
    of a hospital id and the keyed hash in place of a clear search term.
    """
    details = dict(details) if isinstance(details, dict) else {}
    if is_pseudonymised(details):
        return target_id, details
    if target_type == PATIENT_TARGET and target_id:
        target_id = patient_reference(target_id)
    for key in PATIENT_ID_KEYS:
        if isinstance(details.get(key), str) and details[key]:
            details[key] = patient_reference(details[key])
    if SEARCH_KEY in details:
        term = details.pop(SEARCH_KEY)
        details[SEARCH_HASH_KEY] = search_term_hash(term) if isinstance(term, str) else ""
    if isinstance(details.get(PATH_KEY), str):
        details[PATH_KEY] = path_pseudonymised(details[PATH_KEY])
    return target_id, details


def pseudonymised_event(event: Any) -> Any:
    """Set `shown_target_id` and `shown_details` on an AuditEvent (or any object with the
    three fields) for rendering; the stored fields are left alone."""
    event.shown_target_id, event.shown_details = pseudonymised_fields(
        event.target_type, event.target_id, event.details
    )
    return event
