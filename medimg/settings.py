"""medimg settings: one file, driven by environment variables.

Every value comes through a small typed helper that raises ImproperlyConfigured on a
malformed value, so a typo in a deployment fails at start rather than silently. Secrets can
also come from a file named by `NAME_FILE` (Docker/systemd credentials style).
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
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

_DEV_SECRET = "django-insecure-medimg-development-only-never-in-production"
SECRET_KEY = env_str("SECRET_KEY") or _DEV_SECRET
if PRODUCTION and (SECRET_KEY == _DEV_SECRET or len(SECRET_KEY) < 50):
    raise ImproperlyConfigured(
        "MEDIMG_ENV=production needs SECRET_KEY (or SECRET_KEY_FILE): 50 or more random characters"
    )

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [] if PRODUCTION else ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# Where generated development keys, the SQLite file and uploads live by default.
VAR_DIR = Path(env_str("MEDIMG_VAR_DIR") or BASE_DIR / "var")

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
    "accounts",
    "audit",
    "patients",
    "imaging",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "audit.middleware.RefusedRequestAuditMiddleware",
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
            "OPTIONS": {"timeout": 20},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache and jobs -------------------------------------------------------------------------

REDIS_URL = env_str("REDIS_URL")
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
}

# --- Keys -----------------------------------------------------------------------------------

# Key-encryption keys and the audit anchor key live outside the database: from the
# environment, a file, or (development only) a generated file under VAR_DIR/keys.
KEY_DIR = Path(env_str("MEDIMG_KEY_DIR") or VAR_DIR / "keys")
AUDIT_HMAC_KEY = env_str("AUDIT_HMAC_KEY")
if PRODUCTION and not AUDIT_HMAC_KEY:
    raise ImproperlyConfigured(
        "MEDIMG_ENV=production needs AUDIT_HMAC_KEY (or AUDIT_HMAC_KEY_FILE)"
    )
# Ed25519 seed (32 bytes, hex or base64) that signs audit exports; derived from
# AUDIT_HMAC_KEY when unset. Its public key (`manage.py audit_public_key`) checks exports.
AUDIT_SIGNING_KEY = env_str("AUDIT_SIGNING_KEY")
# Key-encryption keys for the per-scan data keys: "id1:hex,id2:hex" (or MEDIMG_KEKS_FILE), and
# the id new data keys are wrapped with. Parsed and length-checked by imaging.crypto.key_ring.
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
UPLOAD_MAX_BYTES = env_int("UPLOAD_MAX_BYTES", 20 * 1024 * 1024, minimum=1024)
UPLOAD_MAX_PIXELS = env_int("UPLOAD_MAX_PIXELS", 60_000_000, minimum=1)
DATA_UPLOAD_MAX_MEMORY_SIZE = UPLOAD_MAX_BYTES + 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
# Local disk writes are temp file + fsync + rename (imaging.storage); S3 can replace it here.
STORAGES = {
    "default": {"BACKEND": "imaging.storage.AtomicFileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# --- Imaging pipeline -----------------------------------------------------------------------

# Detector classes whose boxes are encrypted and filled; empty means every class.
IMAGING_REDACT_CLASSES = env_list("IMAGING_REDACT_CLASSES", [])
# Pixels of margin added around each detected box before it is cropped and filled.
IMAGING_BOX_PADDING = env_int("IMAGING_BOX_PADDING", 4, minimum=0)
# Extra detect-and-fill rounds over the redacted image when verification still finds text.
IMAGING_VERIFY_ROUNDS = env_int("IMAGING_VERIFY_ROUNDS", 2, minimum=0)
# An upload whose perceptual hash is this close (Hamming bits) to another's is flagged.
IMAGING_DUPLICATE_MAX_DISTANCE = env_int("IMAGING_DUPLICATE_MAX_DISTANCE", 6, minimum=0)
# The detector the pipeline calls (dotted path to a function: uint8 frame -> detections).
IMAGING_DETECTOR = env_str("IMAGING_DETECTOR") or "imaging.detection.detect"
# Transient failures (storage, database) are retried with exponential backoff this often.
IMAGING_TASK_MAX_RETRIES = env_int("IMAGING_TASK_MAX_RETRIES", 5, minimum=0)

# --- Security headers -----------------------------------------------------------------------

SESSION_COOKIE_AGE = env_int("SESSION_IDLE_SECONDS", 15 * 60, minimum=60)
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

# --- Internationalisation -------------------------------------------------------------------

LANGUAGE_CODE = "en-gb"
TIME_ZONE = env_str("TIME_ZONE") or "UTC"
USE_I18N = True
USE_TZ = True

# --- Logging --------------------------------------------------------------------------------

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL") or "INFO"},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
