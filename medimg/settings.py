"""medimg settings: one file, driven by environment variables.

Every value comes through a small typed helper that raises ImproperlyConfigured on a
malformed value, so a typo in a deployment fails at start rather than silently. Secrets can
also come from a file named by `NAME_FILE` (Docker/systemd credentials style).
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str | None = None) -> str | None:
    """A string from `NAME`, or from the file named by `NAME_FILE`."""
    file_name = os.environ.get(f"{name}_FILE")
    if file_name:
        try:
            return Path(file_name).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={file_name!r} cannot be read: {exc}") from exc
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use true or false)")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} is below the minimum {minimum}")
    return value


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from None


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_choice(name: str, default: str, choices: set[str]) -> str:
    value = os.environ.get(name, default)
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={value!r} is not one of {sorted(choices)}")
    return value


# --- Mode -----------------------------------------------------------------------------------

MEDIMG_ENV = env_choice("MEDIMG_ENV", "development", {"development", "test", "production"})
PRODUCTION = MEDIMG_ENV == "production"
DEBUG = env_bool("DEBUG", not PRODUCTION)
if PRODUCTION and DEBUG:
    raise ImproperlyConfigured("DEBUG must be off when MEDIMG_ENV=production")

# Where generated development keys, the SQLite file and uploads live by default.
VAR_DIR = Path(env_str("MEDIMG_VAR_DIR") or BASE_DIR / "var")
# Key-encryption keys, the audit anchor key and (development only) SECRET_KEY live outside the
# database: from the environment, a file, or (development only) a generated file here.
KEY_DIR = Path(env_str("MEDIMG_KEY_DIR") or VAR_DIR / "keys")

# SECRET_KEY signs sessions, CSRF tokens and (unless JWT_SIGNING_KEY is set) API tokens. The
# constant that earlier versions used for development is public: anyone could sign tokens with
# it, so it is refused everywhere. Without SECRET_KEY, development and tests generate a random
# key once under KEY_DIR (with a loud warning); production refuses to start.
_PUBLISHED_DEV_SECRET = "django-insecure-medimg-development-only-never-in-production"
SECRET_KEY = env_str("SECRET_KEY") or ""
if SECRET_KEY.strip() == _PUBLISHED_DEV_SECRET:
    raise ImproperlyConfigured(
        "SECRET_KEY is the published development constant; set a random one (or unset it in "
        "development to generate one under MEDIMG_KEY_DIR)"
    )
if PRODUCTION and len(SECRET_KEY) < 50:
    raise ImproperlyConfigured(
        "MEDIMG_ENV=production needs SECRET_KEY (or SECRET_KEY_FILE): 50 or more random characters"
    )
if not SECRET_KEY:
    from medimg.keys import dev_key_file

    SECRET_KEY = dev_key_file("SECRET_KEY", KEY_DIR)

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [] if PRODUCTION else ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# --- Applications ---------------------------------------------------------------------------

INSTALLED_APPS = [
    "accounts.admin_config.MedimgAdminConfig",  # django.contrib.admin, role-checked site
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "axes",
    "accounts",
    "audit",
    "patients",
    "imaging",
    # The DICOM gateway: listener, forwarding, DICOMweb (above imaging; docs/gateway.md).
    "gateway",
    # The project shell (no models): backup commands, metrics and mail receivers.
    "medimg.apps.MedimgConfig",
    "pages",
]

MIDDLEWARE = [
    # First: request latency by URL pattern for Prometheus (medimg.metrics).
    "medimg.metrics.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Content-Security-Policy (no inline script) and the other headers Django does not set.
    "medimg.security_headers.SecurityHeadersMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    # A session that still owes its second factor reaches nothing else (accounts.otp).
    "accounts.otp_middleware.OtpRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "audit.middleware.RefusedRequestAuditMiddleware",
    # Last: turns a django-axes lockout into its response (accounts.lockout).
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "medimg.urls"
WSGI_APPLICATION = "medimg.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "medimg.context_processors.session_idle",
                # The emergency-access banner (templates/base.html).
                "pages.context_processors.emergency_access",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------


def _database_from_url(url: str) -> dict[str, object]:
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql"}:
        raise ImproperlyConfigured(
            f"DATABASE_URL scheme {parts.scheme!r}: only postgres:// is supported"
        )
    name = parts.path.lstrip("/")
    if not name:
        raise ImproperlyConfigured("DATABASE_URL has no database name")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "USER": parts.username or "",
        "PASSWORD": parts.password or "",
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
        "CONN_MAX_AGE": env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0),
        "CONN_HEALTH_CHECKS": True,
    }


DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {"default": _database_from_url(DATABASE_URL)}
else:
    if PRODUCTION:
        raise ImproperlyConfigured("MEDIMG_ENV=production needs DATABASE_URL (PostgreSQL)")
    SQLITE_PATH = Path(env_str("SQLITE_PATH") or VAR_DIR / "db.sqlite3")
    SQLITE_PATH.parent.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": SQLITE_PATH,
            # Several people at once on the embedded install: WAL lets readers go on while one
            # writer commits, and IMMEDIATE transactions take the write lock at BEGIN, so a
            # transaction that reads and then writes (every audited read) waits for the lock
            # under the busy timeout instead of failing at once with "database is locked".
            "OPTIONS": {
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache and jobs -------------------------------------------------------------------------

REDIS_URL = env_str("REDIS_URL")
if PRODUCTION and not REDIS_URL:
    # Session keys, rate-limit counters and the job broker must be shared by every process;
    # a local-memory cache is one process's alone.
    raise ImproperlyConfigured("MEDIMG_ENV=production needs REDIS_URL (a shared cache)")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "medimg",
        }
    }
    CELERY_BROKER_URL = REDIS_URL
    CELERY_TASK_ALWAYS_EAGER = False
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CELERY_BROKER_URL = "memory://"
    # No broker: the same task code runs in-process, right after the transaction commits.
    CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Separate queues, so detection and segmentation scale with their own workers
# (`celery -A medimg worker -Q detect` and `-Q segment`, docs/deployment.md). Anything
# unrouted (beat's requeue) goes to the default queue. In-process mode ignores routing.
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_ROUTES = {
    "imaging.tasks.process_scan": {"queue": "detect"},
    "*segment*": {"queue": "segment"},
}
# For `celery -A medimg beat`: scans whose message or worker was lost are re-enqueued.
CELERY_BEAT_SCHEDULE = {
    "requeue-stuck-scans": {
        "task": "imaging.tasks.requeue_stuck_scans",
        "schedule": env_int("IMAGING_REQUEUE_EVERY_SECONDS", 300, minimum=10),
    },
    # The whole audit chain verified; a failure mails ALERT_EMAIL (medimg.tasks).
    "verify-audit-chain": {
        "task": "medimg.tasks.verify_audit_chain",
        "schedule": env_int("MEDIMG_AUDIT_VERIFY_EVERY_SECONDS", 86_400, minimum=60),
    },
    # Completed scans older than MEDIMG_RETENTION_DAYS erased (nothing when it is not set).
    "erase-expired-scans": {
        "task": "imaging.tasks.erase_expired_scans",
        "schedule": env_int("MEDIMG_RETENTION_EVERY_SECONDS", 3600, minimum=60),
    },
}
# Retention: completed scans are erased (crypto-shredded, imaging.jobs.erasure) this many days
# after upload. Not set (the default): kept until an admin erases them.
MEDIMG_RETENTION_DAYS: int | None = (
    env_int("MEDIMG_RETENTION_DAYS", 0, minimum=1) if env_str("MEDIMG_RETENTION_DAYS") else None
)
# The erasure ledger (medimg.erasures): erased scans that no restored backup may bring back.
# Keep it with the KEKs, outside the database, the media store and the backups. Default:
# KEY_DIR/erasures.jsonl.
MEDIMG_ERASURE_LEDGER = env_str("MEDIMG_ERASURE_LEDGER") or None

# --- Authentication -------------------------------------------------------------------------

AUTH_USER_MODEL = "accounts.User"
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.BCryptSHA256PasswordHasher",
    "django.contrib.auth.hashers.BCryptPasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": env_int("PASSWORD_MIN_LENGTH", 12, minimum=8)},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    # django-axes' lockout check first: a locked-out username and address is refused before
    # the password is even checked (accounts.lockout).
    "accounts.lockout.LockoutBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Failed logins (session, admin site, JWT, wrong second-factor code) per username and address.
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# The cool-off runs from the last counted failure; tries while locked out do not extend it.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_CLIENT_IP_CALLABLE = "accounts.lockout.lockout_client_ip"
AXES_LOCKOUT_CALLABLE = "accounts.lockout.lockout_response"
AXES_SENSITIVE_PARAMETERS = ["username", "ip_address", "password", "code", "otp", "otp_token"]
AXES_VERBOSE = False
# Self-service registrations (POST /api/auth/register/) per client address per hour; more is a
# 429. Counted in the shared cache (medimg.ratelimit).
MEDIMG_REGISTRATIONS_PER_HOUR = env_int("MEDIMG_REGISTRATIONS_PER_HOUR", 10, minimum=1)
# Refused anonymous requests audited per client address per minute; beyond that they are
# counted, and the count goes into the next audited refusal from that address.
MEDIMG_AUDIT_ANONYMOUS_REFUSALS_PER_MINUTE = env_int(
    "MEDIMG_AUDIT_ANONYMOUS_REFUSALS_PER_MINUTE", 30, minimum=1
)
# Routine views (thumbnails of a patient's images, the notes card) are audited once per user,
# patient and kind in this many minutes, not once per request (audit.services
# audit_record_routine; docs/access.md). 0 records every one.
AUDIT_ROUTINE_VIEW_MINUTES = env_int("AUDIT_ROUTINE_VIEW_MINUTES", 15, minimum=0)
# Second factor (accounts.otp): the name authenticator apps show next to the codes.
OTP_TOTP_ISSUER = env_str("OTP_TOTP_ISSUER") or "medimg"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

ACCESS_TOKEN_MINUTES = env_int("ACCESS_TOKEN_MINUTES", 15, minimum=1)
if ACCESS_TOKEN_MINUTES > 15:
    raise ImproperlyConfigured("ACCESS_TOKEN_MINUTES must be 15 or less")
SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=ACCESS_TOKEN_MINUTES),
    "REFRESH_TOKEN_LIFETIME": timedelta(hours=env_int("REFRESH_TOKEN_HOURS", 12, minimum=1)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": True,
    "ALGORITHM": "HS256",
    "SIGNING_KEY": env_str("JWT_SIGNING_KEY") or SECRET_KEY,
    "AUTH_HEADER_TYPES": ("Bearer",),
    "USER_ID_FIELD": "id",
    "USER_ID_CLAIM": "user_id",
    # Every token names who issued it and for whom; one without them or with others is refused.
    "ISSUER": env_str("JWT_ISSUER") or "medimg",
    "AUDIENCE": env_str("JWT_AUDIENCE") or "medimg-api",
    # Revocation is the per-user valid-after time (accounts.tokens), not the MD5 claim.
    "CHECK_REVOKE_TOKEN": False,
    "CHECK_USER_IS_ACTIVE": True,
}
# Session keys from /api/auth/key-exchange/ (cache only, sealing transfers, never storage).
SESSION_KEY_SECONDS = env_int("SESSION_KEY_SECONDS", 3600, minimum=60)
# Restores and region decryptions go to API (token) clients only sealed under a session key
# (X-Medimg-Seal + X-Medimg-Seal-Nonce); browser pages seal with WebCrypto on their own.
# On by default in production, where a plaintext original must not cross any proxy.
MEDIMG_REQUIRE_SEALED_TRANSFERS = env_bool("MEDIMG_REQUIRE_SEALED_TRANSFERS", PRODUCTION)

# --- REST framework and OpenAPI -------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.tokens.MedimgJWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": env_int("API_PAGE_SIZE", 25, minimum=1),
    "EXCEPTION_HANDLER": "medimg.errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "medimg API",
    "DESCRIPTION": (
        "Secure medical-image handling: upload, PHI-region detection and encryption, "
        "restore for doctors, audit. Each operation says which roles may call it."
    ),
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI's files from the sidecar package's static files, never a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "medimg.api.add_common_errors",
    ],
}

# --- Keys -----------------------------------------------------------------------------------

# Key-encryption keys and the audit anchor key: see KEY_DIR above.
AUDIT_HMAC_KEY = env_str("AUDIT_HMAC_KEY")
if PRODUCTION and not AUDIT_HMAC_KEY:
    raise ImproperlyConfigured(
        "MEDIMG_ENV=production needs AUDIT_HMAC_KEY (or AUDIT_HMAC_KEY_FILE)"
    )
# Ed25519 seed (32 bytes, hex or base64) that signs audit exports; derived from
# AUDIT_HMAC_KEY when unset. Its public key (`manage.py audit_public_key`) checks exports.
AUDIT_SIGNING_KEY = env_str("AUDIT_SIGNING_KEY")
# Key-encryption keys for the per-scan data keys: "id1:hex,id2:hex" (or MEDIMG_KEKS_FILE), and
# the id new data keys are wrapped with. Parsed and length-checked by
# engine.crypto.envelope.key_ring.
MEDIMG_KEKS = env_str("MEDIMG_KEKS")
MEDIMG_KEK_CURRENT = env_str("MEDIMG_KEK_CURRENT")
if PRODUCTION and not MEDIMG_KEKS:
    raise ImproperlyConfigured("MEDIMG_ENV=production needs MEDIMG_KEKS (or MEDIMG_KEKS_FILE)")
if MEDIMG_KEKS:
    _kek_ids = [item.split(":", 1)[0].strip() for item in MEDIMG_KEKS.split(",") if item.strip()]
    if any(":" not in item for item in MEDIMG_KEKS.split(",") if item.strip()):
        raise ImproperlyConfigured("MEDIMG_KEKS entries must look like id:key")
    if MEDIMG_KEK_CURRENT is None and len(_kek_ids) != 1:
        raise ImproperlyConfigured("MEDIMG_KEK_CURRENT must name one of several MEDIMG_KEKS")
    if MEDIMG_KEK_CURRENT is not None and MEDIMG_KEK_CURRENT not in _kek_ids:
        raise ImproperlyConfigured(f"MEDIMG_KEK_CURRENT={MEDIMG_KEK_CURRENT!r} is not a KEK id")
    if PRODUCTION:
        # A KEK that is not 32 bytes of hex or base64 stops the start, not the first upload.
        from medimg.keys import decode_key

        for _item in MEDIMG_KEKS.replace("\n", ",").split(","):
            if _item.strip():
                _kid, _, _encoded = _item.partition(":")
                decode_key(_encoded, name=f"MEDIMG_KEKS[{_kid.strip()}]")

# --- Files and uploads ----------------------------------------------------------------------

MEDIA_ROOT = Path(env_str("MEDIA_ROOT") or VAR_DIR / "media")
MEDIA_URL = "/media-not-served/"  # Stored files are served only through permission-checked APIs.
STATIC_URL = "/static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT") or BASE_DIR / "staticfiles")
STATICFILES_DIRS = [BASE_DIR / "static"]
# Limits by kind (engine.intake.validation): JPEG/PNG 20 MB (the reference design's limit); DICOM
# its own, since real cines and multi-frame studies are often 50-500 MB; the pixel limit is
# per frame; the decoded-size limit is what a DICOM's frames add up to once decoded, and is
# what protects a worker's memory from a long cine.
UPLOAD_MAX_BYTES = env_int("UPLOAD_MAX_BYTES", 20 * 1024 * 1024, minimum=1024)
UPLOAD_DICOM_MAX_BYTES = env_int("UPLOAD_DICOM_MAX_BYTES", 1024 * 1024 * 1024, minimum=1024)
UPLOAD_MAX_PIXELS = env_int("UPLOAD_MAX_PIXELS", 60_000_000, minimum=1)
UPLOAD_MAX_DECODED_BYTES = env_int(
    "UPLOAD_MAX_DECODED_BYTES", 2 * 1024 * 1024 * 1024, minimum=1024 * 1024
)
# A zip of a series (engine.intake.archive): its own size, its file count, and what its files add
# up to once inflated (the zip-bomb limit). Each member also meets the two limits above.
UPLOAD_ARCHIVE_MAX_BYTES = env_int("UPLOAD_ARCHIVE_MAX_BYTES", 200 * 1024 * 1024, minimum=1024)
UPLOAD_ARCHIVE_MAX_MEMBERS = env_int("UPLOAD_ARCHIVE_MAX_MEMBERS", 300, minimum=1)
UPLOAD_ARCHIVE_MAX_UNCOMPRESSED = env_int(
    "UPLOAD_ARCHIVE_MAX_UNCOMPRESSED", 512 * 1024 * 1024, minimum=1024
)
# Doctors must say why before an original is restored (the reason goes in the audit log).
MEDIMG_RESTORE_REASON_REQUIRED = env_bool("MEDIMG_RESTORE_REASON_REQUIRED", False)
# Django's caps on a request: the first counts the non-file part of a body only (every upload
# endpoint takes multipart, whose files are not counted), so it does not cap a 1 GiB DICOM;
# files past the second stream to a temporary file instead of memory. The size of a file is
# refused by kind in imaging.services.scans before it is read (and by nginx, docs/deployment.md).
DATA_UPLOAD_MAX_MEMORY_SIZE = UPLOAD_MAX_BYTES + 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
# Local disk writes are temp file + fsync + rename (imaging.vault.storage); S3 can replace it here.
STORAGES: dict[str, dict[str, Any]] = {
    "default": {"BACKEND": "imaging.vault.storage.AtomicFileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# S3-compatible object storage (AWS S3, MinIO, Ceph RGW) through django-storages, only when
# MEDIMG_S3_BUCKET is set; everything stored is already encrypted by the app. Credentials come
# from the environment (or *_FILE) or, when unset, boto3's own chain (instance role).
MEDIMG_S3_BUCKET = env_str("MEDIMG_S3_BUCKET")
if MEDIMG_S3_BUCKET:
    STORAGES["default"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": MEDIMG_S3_BUCKET,
            "endpoint_url": env_str("MEDIMG_S3_ENDPOINT_URL"),
            "region_name": env_str("MEDIMG_S3_REGION"),
            "access_key": env_str("MEDIMG_S3_ACCESS_KEY_ID"),
            "secret_key": env_str("MEDIMG_S3_SECRET_ACCESS_KEY"),
            "location": env_str("MEDIMG_S3_PREFIX") or "",
            "default_acl": "private",
            "querystring_auth": True,
            # Never overwrite: a name taken gets a fresh one, as on local disk.
            "file_overwrite": False,
        },
    }

# --- Imaging pipeline -----------------------------------------------------------------------

# Detector classes whose boxes are encrypted and filled; empty means every class.
IMAGING_REDACT_CLASSES = env_list("IMAGING_REDACT_CLASSES", [])
# Pixels of margin added around each detected box before it is cropped and filled.
IMAGING_BOX_PADDING = env_int("IMAGING_BOX_PADDING", 4, minimum=0)
# Extra detect-and-fill rounds over the redacted image when verification still finds text.
IMAGING_VERIFY_ROUNDS = env_int("IMAGING_VERIFY_ROUNDS", 2, minimum=0)
# Where the verification pass looks again: "bands" around what was filled (a fraction of a
# detector pass), or "full" frames (twice the detection time). See engine.detection.pipeline.
IMAGING_VERIFY_SCOPE = env_choice("IMAGING_VERIFY_SCOPE", "bands", {"bands", "full"})
# Cines: detect (and verify) a frame again only where its overlay areas changed from the last
# frame the detector read, by more than this many grey levels in an 8x8 cell; otherwise reuse
# its boxes. Off: every frame is detected. See engine.detection.pipeline, "Static overlays".
IMAGING_CINE_REUSE = env_bool("IMAGING_CINE_REUSE", True)
IMAGING_CINE_CHANGE_THRESHOLD = env_float("IMAGING_CINE_CHANGE_THRESHOLD", 6.0)
# Per-scanner rules (imaging.models.ScannerRule): Django admin suggests a rule when technicians
# added about the same box by hand on this many scans of one scanner model and image size.
SCANNER_RULE_SUGGEST_AFTER = env_int("SCANNER_RULE_SUGGEST_AFTER", 3, minimum=1)
# The second opinion (engine.detection.ocr, PP-OCR text detection from the rapidocr package):
# after redaction it looks for text left around the filled boxes ("bands"), there and at the
# frame's edges ("margins"), or everywhere ("full"); what it finds outside every region flags
# the scan for review. "off" skips it. Measured cost: docs/benchmarks.md.
IMAGING_SECOND_OPINION = env_str("IMAGING_SECOND_OPINION") or "margins"
if IMAGING_SECOND_OPINION not in ("off", "bands", "margins", "full"):
    raise ImproperlyConfigured(
        "IMAGING_SECOND_OPINION must be off, bands, margins or full, "
        f"not {IMAGING_SECOND_OPINION!r}"
    )
IMAGING_SECOND_OPINION_THREADS = env_int("IMAGING_SECOND_OPINION_THREADS", 1, minimum=1)
# With the second opinion on, for DICOM: read (PP-OCR recognition) the text it finds that no
# region covers, and the detections of classes not redacted, and compare it with the header's
# name, patient ID, birth date, accession number and institution; a match is sealed, filled
# and flagged for review. Never stored or logged: only which kind matched where. Cost:
# docs/benchmarks.md.
IMAGING_SECOND_OPINION_MATCH = env_bool("IMAGING_SECOND_OPINION_MATCH", True)
# An upload whose perceptual hash is this close (Hamming bits) to another's is flagged.
IMAGING_DUPLICATE_MAX_DISTANCE = env_int("IMAGING_DUPLICATE_MAX_DISTANCE", 6, minimum=0)
# The detector the pipeline calls (dotted path to a function: uint8 frame -> detections);
# imaging.jobs.detector.detect is the YOLO detector tuned by IMAGING_DETECTOR_WEIGHTS, _BACKEND,
# _CONFIDENCE, _IOU, _IMGSZ, _TILE_ABOVE and _TILES (grid or margins) when they are set (else
# the engine's defaults).
IMAGING_DETECTOR = env_str("IMAGING_DETECTOR") or "imaging.jobs.detector.detect"
# Drift on the admin statistics page (imaging.selectors.stats.weekly_drift): a week whose
# median detector confidence or median regions per image departs from the mean of the previous
# four weeks by more than this share of that mean (0.25 = 25 %) is flagged; weeks with fewer
# than DRIFT_MIN_SCANS completed images are shown but neither judged nor used as a baseline.
DRIFT_THRESHOLD = env_float("DRIFT_THRESHOLD", 0.25)
if not DRIFT_THRESHOLD > 0:
    raise ImproperlyConfigured(f"DRIFT_THRESHOLD must be above 0, not {DRIFT_THRESHOLD!r}")
DRIFT_MIN_SCANS = env_int("DRIFT_MIN_SCANS", 5, minimum=1)
# Transient failures (storage, database) are retried with exponential backoff this often.
IMAGING_TASK_MAX_RETRIES = env_int("IMAGING_TASK_MAX_RETRIES", 5, minimum=0)
# Runs of one scan's processing in all (retries and requeues counted): past it the scan is
# failed (too_many_attempts) instead of being handed to a worker again. A file that kills
# every worker that touches it must not come back forever.
IMAGING_MAX_ATTEMPTS = env_int(
    "IMAGING_MAX_ATTEMPTS", 2 * (IMAGING_TASK_MAX_RETRIES + 1), minimum=1
)
# A scan left uploaded or processing this long is stuck (a lost message or a dead worker):
# the beat task requeue_stuck_scans and services.processing.scans_requeue enqueue it again.
IMAGING_STUCK_AFTER_SECONDS = env_int("IMAGING_STUCK_AFTER_SECONDS", 600, minimum=1)
# Stored folders no scan points at (a killed upload's original, a killed run's outputs) are
# deleted by beat once their newest file is this old (imaging.jobs.orphans).
IMAGING_ORPHAN_AFTER_SECONDS = env_int("IMAGING_ORPHAN_AFTER_SECONDS", 86_400, minimum=60)
CELERY_BEAT_SCHEDULE["sweep-orphan-files"] = {
    "task": "imaging.tasks.sweep_orphan_files",
    "schedule": env_int("IMAGING_ORPHAN_SWEEP_SECONDS", 3600, minimum=60),
}
# Redacted thumbnails stay cached this long (keys change whenever the redacted image does).
IMAGING_THUMBNAIL_CACHE_SECONDS = env_int("IMAGING_THUMBNAIL_CACHE_SECONDS", 86_400, minimum=1)

# --- Segmentation (imaging.services.segmentation) --------------------------------------------

# Model directories (config.json + model.onnx, weights.pt or TorchScript model.pt), registered
# as SegmentationModel rows on first use.
SEGMENTATION_MODELS_DIR = Path(
    env_str("SEGMENTATION_MODELS_DIR") or BASE_DIR / "model" / "segmentation"
)
# Threads per segmentation run (onnxruntime intra-op / torch); 1 keeps a worker predictable.
SEGMENTATION_THREADS = env_int("SEGMENTATION_THREADS", 1, minimum=1)

# --- DICOM de-identification (PS3.15 Annex E; imaging.vault.identity, docs/deidentification.md)
# ----

# Installation secret (32 bytes, hex or base64; or MEDIMG_DEID_SECRET_FILE) from which the UID
# remapping, patient pseudonyms and per-patient date shifts are derived. Keep it for the life
# of the installation: a new secret gives the same patient new UIDs and a new date shift.
MEDIMG_DEID_SECRET = env_str("MEDIMG_DEID_SECRET")
if PRODUCTION and not MEDIMG_DEID_SECRET:
    raise ImproperlyConfigured(
        "MEDIMG_ENV=production needs MEDIMG_DEID_SECRET (or MEDIMG_DEID_SECRET_FILE)"
    )
# Free-text descriptors (Study and Series Description, Image Comments, Protocol Name,
# Requested Procedure Description...): "remove" (the default) gives them the Basic Profile's
# action (removed, emptied or a dummy value) and does not claim Clean Descriptors; "clean"
# applies Clean Descriptors: the patient's names, IDs, dates and phone numbers are cut out,
# and a descriptor that still holds a date, phone number or ID-like number becomes "REMOVED".
DEID_DESCRIPTORS = env_choice("DEID_DESCRIPTORS", "remove", {"remove", "clean"})
# How a redacted or de-identified DICOM is written: never lossy. "uncompressed" (Explicit VR
# Little Endian for compressed sources), or losslessly compressed: "rle" (RLE Lossless),
# "jpeg-ls" (JPEG-LS Lossless), "jpeg2000" (JPEG 2000 Lossless).
DICOM_OUTPUT_SYNTAX = env_choice(
    "DICOM_OUTPUT_SYNTAX", "uncompressed", {"uncompressed", "rle", "jpeg-ls", "jpeg2000"}
)
# Annex E options beyond the defaults (Modified Dates, Clean Pixel Data; Clean Descriptors
# with DEID_DESCRIPTORS=clean).
DEID_RETAIN_PATIENT_CHARACTERISTICS = env_bool("DEID_RETAIN_PATIENT_CHARACTERISTICS", False)
DEID_RETAIN_DEVICE_IDENTITY = env_bool("DEID_RETAIN_DEVICE_IDENTITY", False)
# Private elements kept (Retain Safe Private): "GGGGEEEE" tags or "CREATOR:GGGG:EE" (private
# creator, group, element offset), comma-separated. Everything else private is removed.
DEID_SAFE_PRIVATE = env_list("DEID_SAFE_PRIVATE", [])
_ODD_GROUP = "[0-9A-Fa-f]{3}[13579BDFbdf]"
_SAFE_PRIVATE = re.compile(f"{_ODD_GROUP}[0-9A-Fa-f]{{4}}|[^:]+:{_ODD_GROUP}:[0-9A-Fa-f]{{2}}")
for _entry in DEID_SAFE_PRIVATE:
    if not _SAFE_PRIVATE.fullmatch(_entry):
        raise ImproperlyConfigured(
            f"DEID_SAFE_PRIVATE entry {_entry!r} is not a private GGGGEEEE tag or CREATOR:GGGG:EE"
        )

# --- DICOM gateway (gateway/; docs/gateway.md) ---------------------------------------------

# Our AE title, and where `manage.py dicom_listener` listens by default.
DICOM_AE_TITLE = env_str("DICOM_AE_TITLE", "MEDIMG") or "MEDIMG"
DICOM_LISTENER_HOST = env_str("DICOM_LISTENER_HOST", "127.0.0.1") or "127.0.0.1"
DICOM_LISTENER_PORT = env_int("DICOM_LISTENER_PORT", 11112, minimum=1)
# Peers allowed to send, "AET@host:port,..." (host "*": any address), seeded into
# gateway.DicomPeer at listener start and filed as DICOM_GATEWAY_USER (a technician).
DICOM_PEERS = env_str("DICOM_PEERS", "") or ""
DICOM_GATEWAY_USER = env_str("DICOM_GATEWAY_USER", "") or ""
# The department (slug) patients first received over DICOM belong to when their peer names
# none (gateway.DicomPeer.department); empty: the peer's upload user's departments.
DICOM_DEFAULT_DEPARTMENT = env_str("DICOM_DEFAULT_DEPARTMENT", "") or ""
# Forward destinations, "AET@host:port" (C-STORE) or a STOW-RS studies URL, comma-separated.
DICOM_FORWARD_TO = env_str("DICOM_FORWARD_TO", "") or ""
DICOM_FORWARD_STOW_AUTHORIZATION = env_str("DICOM_FORWARD_STOW_AUTHORIZATION", "") or ""
DICOM_FORWARD_TIMEOUT = env_int("DICOM_FORWARD_TIMEOUT", 30, minimum=1)
# Retry i waits BACKOFF * 2**(i-1) seconds, at most BACKOFF_MAX; failed after MAX_ATTEMPTS.
DICOM_FORWARD_BACKOFF_SECONDS = env_float("DICOM_FORWARD_BACKOFF_SECONDS", 30.0)
DICOM_FORWARD_BACKOFF_MAX_SECONDS = env_float("DICOM_FORWARD_BACKOFF_MAX_SECONDS", 3600.0)
DICOM_FORWARD_MAX_ATTEMPTS = env_int("DICOM_FORWARD_MAX_ATTEMPTS", 10, minimum=1)
CELERY_BEAT_SCHEDULE["gateway-forward-due-sends"] = {
    "task": "gateway.tasks.forward_due_sends",
    "schedule": env_int("DICOM_FORWARD_SWEEP_SECONDS", 60, minimum=5),
}

# --- Security headers -----------------------------------------------------------------------

# Browser sessions end after this much inactivity; pages warn a minute before (session.js).
MEDIMG_SESSION_IDLE_MINUTES = env_int("MEDIMG_SESSION_IDLE_MINUTES", 15, minimum=2)
SESSION_COOKIE_AGE = MEDIMG_SESSION_IDLE_MINUTES * 60
SESSION_SAVE_EVERY_REQUEST = True  # The age is an inactivity timeout, not a fixed lifetime.
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
if PRODUCTION:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- Health and metrics (medimg.health, medimg.metrics; docs/deployment.md) ---------------------

# /metrics answers these client addresses or networks (REMOTE_ADDR, never X-Forwarded-For) and
# any client sending "Authorization: Bearer METRICS_TOKEN" (or METRICS_TOKEN_FILE).
METRICS_ALLOWED_IPS = env_list("METRICS_ALLOWED_IPS", ["127.0.0.1", "::1"])
METRICS_TOKEN = env_str("METRICS_TOKEN") or None
# A Celery worker on a host without a web process serves its own metrics on this port.
MEDIMG_METRICS_PORT = env_int("MEDIMG_METRICS_PORT", 0, minimum=0) or None
MEDIMG_METRICS_ADDR = env_str("MEDIMG_METRICS_ADDR") or "127.0.0.1"
if PRODUCTION:
    # Probes and scrapers talk plain HTTP inside the network: no redirect to HTTPS for them.
    SECURE_REDIRECT_EXEMPT = [r"^healthz(/ready)?$", r"^metrics$"]

# --- Backups (manage.py backup / restore_backup; docs/operations.md) --------------------------

# 32 bytes (hex or base64; or MEDIMG_BACKUP_KEY_FILE) that encrypt every backup. Kept apart
# from the backups and from the KEKs; generated under KEY_DIR in development.
MEDIMG_BACKUP_KEY = env_str("MEDIMG_BACKUP_KEY")

# --- E-mail (medimg.mail) ------------------------------------------------------------------

# SMTP when EMAIL_HOST is set; otherwise mails are printed to the console (`make run`).
EMAIL_HOST = env_str("EMAIL_HOST") or "localhost"
EMAIL_BACKEND = env_str("EMAIL_BACKEND") or (
    "django.core.mail.backends.smtp.EmailBackend"
    if env_str("EMAIL_HOST")
    else "django.core.mail.backends.console.EmailBackend"
)
EMAIL_PORT = env_int("EMAIL_PORT", 587 if env_bool("EMAIL_USE_TLS", False) else 25, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER") or ""
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD") or ""
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured("EMAIL_USE_TLS and EMAIL_USE_SSL exclude each other")
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10, minimum=1)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL") or "medimg <medimg@localhost>"
SERVER_EMAIL = env_str("SERVER_EMAIL") or DEFAULT_FROM_EMAIL
EMAIL_SUBJECT_PREFIX = "[medimg] "
# Who gets alerts (lockouts, failed integrity checks, emergency access): comma-separated.
ALERT_EMAIL = env_list("ALERT_EMAIL", [])
# Who is told of every emergency (break-glass) access, besides ALERT_EMAIL.
PRIVACY_OFFICER_EMAIL = env_list("PRIVACY_OFFICER_EMAIL", [])
# Emergency (break-glass) access (patients.emergency, docs/access.md): how long a grant lasts,
# and how many requests (each a lookup of a typed hospital id) a user may make per hour.
BREAK_GLASS_HOURS = env_int("BREAK_GLASS_HOURS", 4, minimum=1)
BREAK_GLASS_REQUESTS_PER_HOUR = env_int("BREAK_GLASS_REQUESTS_PER_HOUR", 10, minimum=1)
# The address users reach the site at, for links in mails sent outside a request
# (e.g. "https://medimg.hospital.example"); password-reset links use the request's host.
MEDIMG_BASE_URL = (env_str("MEDIMG_BASE_URL") or "").rstrip("/")
# Password-reset links stay valid this long (Django's default is three days).
PASSWORD_RESET_TIMEOUT = env_int("PASSWORD_RESET_TIMEOUT_MINUTES", 60, minimum=5) * 60
# Password-reset requests per client address per hour.
MEDIMG_PASSWORD_RESETS_PER_HOUR = env_int("MEDIMG_PASSWORD_RESETS_PER_HOUR", 10, minimum=1)

# --- Internationalisation -------------------------------------------------------------------

LANGUAGE_CODE = "en-gb"
TIME_ZONE = env_str("TIME_ZONE") or "UTC"
USE_I18N = True
USE_TZ = True

# --- Logging --------------------------------------------------------------------------------

# Django's dictConfig plus a record factory that redacts patient ids in URL paths and every
# query-string value from each log record (medimg.log_redaction): Django logs the path of each
# 4xx, and request lines carry searches.
LOGGING_CONFIG = "medimg.log_redaction.configure_logging"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL") or "INFO"},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # django-axes logs every attempt at INFO; the audit log already records them.
        "axes": {"level": "WARNING"},
    },
}
