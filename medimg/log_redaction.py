"""No patient identifier in a log line: record ids in URL paths and every query-string value
are redacted from each log record as it is made.

Django logs the path of every 4xx and 5xx response ("Not Found: /api/patients/MRN-1234/...",
logger django.request), the development server and gunicorn log each request line with its
query string (`?q=<name searched for>`), and a traceback can quote either. Redacting when the
record is created (a log-record factory, installed with Django's logging by
`configure_logging`, settings.LOGGING_CONFIG) covers every logger, handler and process
(web, Celery, manage.py) alike, and whatever reads the records later (a log shipper, pytest)
only ever sees the redacted text:

    /api/patients/MRN-1234/images/       ->  /api/patients/[redacted]/images/
    /api/patients/?q=Grace&page=2        ->  /api/patients/?q=[redacted]&page=[redacted]

Restore reasons travel in POST bodies, which are never logged. A proxy in front of the app
keeps its own access log: see docs/deployment.md.
"""

from __future__ import annotations

import logging
import logging.config
import re
from collections.abc import Callable
from typing import Any

REDACTED = "[redacted]"

# The record id after /patients/ (API and pages) or /patients/patient/ (Django admin). Ids may
# hold spaces, "#" or "?" (Django logs the decoded path), so first up to the slash that ends
# it, else up to the next separator.
_PATIENT_IN_PATH = re.compile(
    r"(/patients/(?:patient/|(?!patient/)))(?!\[redacted\])(?:[^/?\s\"'<>][^/\"'<>\n]{0,200}?(?=/)|[^/?#\s\"'<>]+)"
)
# A query string: "?" then name=value pairs, up to whitespace or a quote.
_QUERY = re.compile(r"\?([\w.\[\]%-]+=[^\s\"'<>#]*)")
_QUERY_VALUE = re.compile(r"=[^&;]*")


def redact(text: str) -> str:
    """`text` with patient ids in paths and all query-string values replaced."""
    if "/patients/" not in text and "?" not in text:
        return text
    text = _PATIENT_IN_PATH.sub(r"\1" + REDACTED, text)
    return _QUERY.sub(lambda m: "?" + _QUERY_VALUE.sub("=" + REDACTED, m.group(1)), text)


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # A malformed record is the logging module's to report, not ours.
        return
    clean = redact(message)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info and not record.exc_text:
        # Formatters use exc_text when it is set: the traceback is redacted once, here.
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))


class RedactIdentifiers(logging.Filter):
    """The same redaction as a logging filter, for logging set up outside Django (a gunicorn
    log config). Django's own logging needs none: the record factory covers it."""

    def filter(self, record: logging.LogRecord) -> bool:
        _redact_record(record)
        return True


def _redacting_factory(previous: Callable[..., logging.LogRecord]) -> Callable[..., Any]:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _redact_record(record)
        return record

    factory.medimg_redacting = True  # type: ignore[attr-defined]
    return factory


def install_record_redaction() -> None:
    """Redact every log record this process makes from now on (once per process)."""
    current = logging.getLogRecordFactory()
    if not getattr(current, "medimg_redacting", False):
        logging.setLogRecordFactory(_redacting_factory(current))


def configure_logging(config: dict[str, Any]) -> None:
    """settings.LOGGING_CONFIG: Django's dictConfig, plus the redaction above."""
    logging.config.dictConfig(config)
    install_record_redaction()
