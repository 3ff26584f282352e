"""Backups: what `manage.py backup` writes and `manage.py restore_backup` reads.

A backup is a folder:

    manifest.json        what is inside: every file's size and SHA-256 (plaintext and as
                         stored), the database engine, the KEK ids the data needs (never the
                         keys), the audit export's count and signing public key
    manifest.hmac        HMAC-SHA256 of manifest.json under the backup key
    database.sqlite3.enc SQLite's online backup API copy  (or database.pgdump.enc: pg_dump -Fc)
    audit-export.jsonl.enc  the signed audit export (verifies offline once decrypted)
    media/<name>.enc     every stored file, through the storage API (local disk or S3)

Every file is encrypted with AES-256-GCM under the backup key (MEDIMG_BACKUP_KEY, 32 bytes;
generated under KEY_DIR in development) in 1 MiB chunks: nonce = 8 random bytes + the chunk
number, associated data = the file's name, the chunk number and whether it is the last, so a
chunk moved, dropped, reordered or cut off fails to decrypt. The database holds patient names
in clear, so a backup must never be readable without that key; the KEKs that protect the
pixels are not in it either (docs/operations.md: key custody).

Order of the backup: the audit export first (its own AUDIT_EXPORTED event lands in the
database), then the database snapshot, then the files. Files are written atomically and
never changed in place, so every file a row of the snapshot names is there; files added after
the snapshot are extra and harmless.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import shutil
import sqlite3
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.files.base import File
from django.core.files.storage import default_storage
from django.db import connection
from django.dispatch import Signal
from django.utils import timezone

from medimg.erasures import erased_scan_uids

FORMAT = 1
MAGIC = b"MIMGBAK1"
CHUNK = 1 << 20
NONCE_PREFIX = 8
MANIFEST = "manifest.json"
MANIFEST_MAC = "manifest.hmac"
AUDIT_FILE = "audit-export.jsonl"
MEDIA_DIR = "media"
# Never backed up: the readiness probe's files and half-written temporaries.
SKIP_PREFIXES = ("health/",)


class BackupError(Exception):
    """The backup cannot be written or trusted; the message says why (no secrets)."""


class BackupTampered(BackupError):
    """A file of the backup, its manifest or its audit export fails its integrity check
    (changed, cut short, or another key): the restore command mails an integrity alert."""


# Sent once the database is loaded, before any stored file is put back: imaging applies the
# erasure ledger (medimg.erasures) to the restored rows here, so nothing erased comes back.
database_restored = Signal()


# --- Key ------------------------------------------------------------------------------------


def backup_key() -> bytes:
    from medimg.keys import decode_key, load_or_create_dev_key

    configured = getattr(settings, "MEDIMG_BACKUP_KEY", None)
    if configured:
        return decode_key(configured, name="MEDIMG_BACKUP_KEY")
    try:
        return load_or_create_dev_key("MEDIMG_BACKUP_KEY", None)
    except ImproperlyConfigured as exc:
        raise BackupError(str(exc)) from None


def key_id(key: bytes) -> str:
    """Names the key without revealing it, so a restore can say "wrong key" plainly."""
    return hmac.new(key, b"medimg-backup-key-id", hashlib.sha256).hexdigest()[:16]


# --- Chunked AES-GCM ------------------------------------------------------------------------


def _aad(name: str, index: int, last: bool) -> bytes:
    return b"medimg-backup:v1:" + name.encode() + struct.pack(">I?", index, last)


@dataclass(frozen=True)
class Written:
    size: int
    sha256: str  # plaintext
    stored_sha256: str  # the encrypted file


def encrypt_stream(source: IO[bytes], target: Path, *, key: bytes, name: str) -> Written:
    """Encrypt `source` into `target` (written aside, fsynced, renamed)."""
    aead = AESGCM(key)
    prefix = secrets.token_bytes(NONCE_PREFIX)
    plain_digest, stored_digest = hashlib.sha256(), hashlib.sha256()
    size = 0
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    with partial.open("wb") as out:

        def emit(data: bytes) -> None:
            out.write(data)
            stored_digest.update(data)

        emit(MAGIC + prefix)
        index = 0
        chunk = source.read(CHUNK)
        while True:
            following = source.read(CHUNK) if chunk else b""
            last = not following
            plain_digest.update(chunk)
            size += len(chunk)
            nonce = prefix + struct.pack(">I", index)
            sealed = aead.encrypt(nonce, chunk, _aad(name, index, last))
            emit(struct.pack(">I", len(sealed)) + sealed)
            if last:
                break
            chunk, index = following, index + 1
        out.flush()
        os.fsync(out.fileno())
    partial.replace(target)
    return Written(size, plain_digest.hexdigest(), stored_digest.hexdigest())


def decrypt_chunks(path: Path, *, key: bytes, name: str) -> Iterator[bytes]:
    """The plaintext of `path`, chunk by chunk; BackupError on any change to it."""
    aead = AESGCM(key)
    with path.open("rb") as source:
        head = source.read(len(MAGIC) + NONCE_PREFIX)
        if len(head) != len(MAGIC) + NONCE_PREFIX or not head.startswith(MAGIC):
            raise BackupTampered(f"{name}: not a medimg backup file")
        prefix = head[len(MAGIC) :]
        index = 0
        while True:
            length_bytes = source.read(4)
            if len(length_bytes) != 4:
                raise BackupTampered(f"{name}: cut short")
            (length,) = struct.unpack(">I", length_bytes)
            if length > CHUNK + 16:
                raise BackupTampered(f"{name}: damaged (chunk {index})")
            sealed = source.read(length)
            nonce = prefix + struct.pack(">I", index)
            last = False
            try:
                plain = aead.decrypt(nonce, sealed, _aad(name, index, False))
            except InvalidTag:
                try:
                    plain = aead.decrypt(nonce, sealed, _aad(name, index, True))
                    last = True
                except InvalidTag:
                    raise BackupTampered(f"{name}: damaged or wrong key (chunk {index})") from None
            yield plain
            if last:
                if source.read(1):
                    raise BackupTampered(f"{name}: data after the last chunk")
                return
            index += 1


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        for block in iter(lambda: source.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


# --- Database -------------------------------------------------------------------------------


def database_engine() -> str:
    vendor = connection.vendor
    if vendor not in {"sqlite", "postgresql"}:
        raise BackupError(f"database engine {vendor!r} is not supported")
    return vendor


def _pg_env() -> tuple[dict[str, str], list[str]]:
    db = connection.settings_dict
    env = {**os.environ}
    if db.get("PASSWORD"):
        env["PGPASSWORD"] = str(db["PASSWORD"])
    args = []
    if db.get("HOST"):
        args += ["-h", str(db["HOST"])]
    if db.get("PORT"):
        args += ["-p", str(db["PORT"])]
    if db.get("USER"):
        args += ["-U", str(db["USER"])]
    return env, args


def dump_database(target: Path) -> None:
    """A consistent copy of the whole database into the plain file `target`."""
    if database_engine() == "sqlite":
        connection.ensure_connection()
        destination = sqlite3.connect(target)
        try:
            # SQLite's online backup API: a consistent snapshot while others go on writing.
            connection.connection.backup(destination)
        finally:
            destination.close()
        return
    env, args = _pg_env()
    name = str(connection.settings_dict["NAME"])
    # pg_dump reads one snapshot (a repeatable-read transaction): consistent by itself.
    _run(["pg_dump", "-Fc", "--no-owner", "--no-privileges", *args, "-f", str(target), name], env)


def load_database(source: Path) -> None:
    """Replace the whole database with the copy in the plain file `source`."""
    if database_engine() == "sqlite":
        connection.ensure_connection()
        origin = sqlite3.connect(source)
        try:
            origin.backup(connection.connection)
        finally:
            origin.close()
        return
    env, args = _pg_env()
    name = str(connection.settings_dict["NAME"])
    # Our own connection holds no lock while pg_restore drops and recreates the tables.
    connection.close()
    _run(
        [
            "pg_restore",
            "--clean",
            "--if-exists",
            "--no-owner",
            "--no-privileges",
            "--single-transaction",
            "--exit-on-error",
            *args,
            "-d",
            name,
            str(source),
        ],
        env,
    )


def _run(command: list[str], env: dict[str, str]) -> None:
    try:
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise BackupError(
            f"{command[0]} is not installed (apt-get install postgresql-client)"
        ) from None
    if result.returncode != 0:
        # Its own message names tables and options, not passwords (PGPASSWORD is not echoed).
        raise BackupError(f"{command[0]} failed: {result.stderr.strip()[-500:]}")


# --- Stored files ---------------------------------------------------------------------------


def stored_files(directory: str = "") -> Iterator[str]:
    """Every file name in the default storage (local disk or S3), through its API."""
    try:
        folders, files = default_storage.listdir(directory)
    except FileNotFoundError:
        return
    for file_name in sorted(files):
        name = f"{directory}{file_name}"
        if file_name.startswith(".tmp-") or name.startswith(SKIP_PREFIXES):
            continue
        yield name
    for folder in sorted(folders):
        yield from stored_files(f"{directory}{folder}/")


def kek_ids() -> list[str]:
    raw = getattr(settings, "MEDIMG_KEKS", None)
    if not raw:
        return ["dev"]
    return sorted(
        item.split(":", 1)[0].strip() for item in raw.replace("\n", ",").split(",") if item.strip()
    )


def latest_migrations() -> dict[str, str]:
    from django.db.migrations.recorder import MigrationRecorder

    latest: dict[str, str] = {}
    for app, name in MigrationRecorder(connection).migration_qs.values_list("app", "name"):
        latest[app] = max(latest.get(app, ""), name)
    return latest


# --- Manifest -------------------------------------------------------------------------------


def write_manifest(directory: Path, manifest: dict[str, Any], key: bytes) -> None:
    data = json.dumps(manifest, indent=2, sort_keys=True).encode()
    (directory / MANIFEST).write_bytes(data)
    mac = hmac.new(key, data, hashlib.sha256).hexdigest()
    (directory / MANIFEST_MAC).write_text(mac + "\n")


def read_manifest(directory: Path, key: bytes) -> dict[str, Any]:
    try:
        data = (directory / MANIFEST).read_bytes()
        mac = (directory / MANIFEST_MAC).read_text().strip()
    except OSError as exc:
        raise BackupError(f"{directory} has no readable manifest ({exc.strerror})") from None
    manifest = json.loads(data)
    if manifest.get("backup_key_id") not in (None, key_id(key)):
        raise BackupError(
            "this backup was written under another backup key "
            f"(its id {manifest.get('backup_key_id')}, ours {key_id(key)}): set MEDIMG_BACKUP_KEY"
        )
    expected = hmac.new(key, data, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, mac):
        raise BackupTampered("the manifest does not match its HMAC: changed or another key")
    if manifest.get("format") != FORMAT:
        raise BackupError(f"unknown backup format {manifest.get('format')!r}")
    return manifest


# --- Backup ---------------------------------------------------------------------------------


def create_backup(out: Path) -> dict[str, Any]:
    from audit.chain import public_key_hex
    from audit.services import audit_export

    if out.exists() and any(out.iterdir()):
        raise BackupError(f"{out} is not empty")
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = backup_key()
    engine = database_engine()
    files: list[dict[str, Any]] = []

    def record(kind: str, name: str, stored: str, written: Written) -> None:
        files.append(
            {
                "kind": kind,
                "name": name,
                "stored": stored,
                "size": written.size,
                "sha256": written.sha256,
                "stored_sha256": written.stored_sha256,
            }
        )

    # 1. The signed audit export (its AUDIT_EXPORTED event goes into the snapshot below).
    export = audit_export(via="manage.py backup")
    with export.file:
        written = encrypt_stream(export.file, out / f"{AUDIT_FILE}.enc", key=key, name=AUDIT_FILE)
    record("audit", AUDIT_FILE, f"{AUDIT_FILE}.enc", written)

    # 2. The database.
    db_name = "database.sqlite3" if engine == "sqlite" else "database.pgdump"
    with tempfile.TemporaryDirectory(dir=out, prefix=".dump-") as scratch:
        plain = Path(scratch) / db_name
        dump_database(plain)
        with plain.open("rb") as source:
            written = encrypt_stream(source, out / f"{db_name}.enc", key=key, name=db_name)
    record("database", db_name, f"{db_name}.enc", written)

    # 3. Every stored file.
    for name in stored_files():
        stored = f"{MEDIA_DIR}/{name}.enc"
        with default_storage.open(name, "rb") as stored_file:
            written = encrypt_stream(stored_file, out / stored, key=key, name=f"{MEDIA_DIR}/{name}")
        record("media", name, stored, written)

    manifest = {
        "format": FORMAT,
        "created_at": timezone.now().isoformat(),
        "engine": engine,
        "backup_key_id": key_id(key),
        "kek_ids_needed": kek_ids(),
        "migrations": latest_migrations(),
        "audit": {
            "count": export.count,
            "sha256": export.sha256,
            "public_key": public_key_hex(),
        },
        "files": files,
    }
    write_manifest(out, manifest, key)
    return manifest


# --- Restore --------------------------------------------------------------------------------


def verify_backup(directory: Path, key: bytes) -> dict[str, Any]:
    """Every file present, unchanged and decryptable, before anything is touched."""
    manifest = read_manifest(directory, key)
    for entry in manifest["files"]:
        path = directory / entry["stored"]
        if not path.is_file():
            raise BackupTampered(f"{entry['stored']} is missing")
        if sha256_file(path) != entry["stored_sha256"]:
            raise BackupTampered(f"{entry['stored']} does not match its SHA-256 in the manifest")
    for entry in manifest["files"]:
        label = f"{MEDIA_DIR}/{entry['name']}" if entry["kind"] == "media" else entry["name"]
        digest, size = hashlib.sha256(), 0
        for chunk in decrypt_chunks(directory / entry["stored"], key=key, name=label):
            digest.update(chunk)
            size += len(chunk)
        if digest.hexdigest() != entry["sha256"] or size != entry["size"]:
            raise BackupTampered(f"{entry['stored']} decrypts to something else than was backed up")
    return manifest


def verify_audit_export(directory: Path, manifest: dict[str, Any], key: bytes) -> Any:
    from audit.export import public_key_from_hex, verify_export

    entry = next(item for item in manifest["files"] if item["kind"] == "audit")
    with tempfile.TemporaryFile() as plain:
        for chunk in decrypt_chunks(directory / entry["stored"], key=key, name=AUDIT_FILE):
            plain.write(chunk)
        plain.seek(0)
        return verify_export(plain, public_key=public_key_from_hex(manifest["audit"]["public_key"]))


def installation_is_empty() -> bool:
    for label, model in (("accounts", "User"), ("audit", "AuditEvent"), ("imaging", "Scan")):
        try:
            if apps.get_model(label, model).objects.exists():
                return False
        except LookupError:
            continue
    return not any(True for _ in stored_files())


def restore_backup(directory: Path) -> dict[str, Any]:
    key = backup_key()
    manifest = verify_backup(directory, key)
    if manifest["engine"] != database_engine():
        raise BackupError(
            f"the backup is of a {manifest['engine']} database; this installation uses "
            f"{database_engine()}"
        )
    report = verify_audit_export(directory, manifest, key)
    if not report.ok:
        raise BackupTampered(f"the audit export in the backup does not verify: {report.message}")

    db_entry = next(item for item in manifest["files"] if item["kind"] == "database")
    with tempfile.TemporaryDirectory(prefix="medimg-restore-") as scratch:
        plain = Path(scratch) / db_entry["name"]
        with plain.open("wb") as out:
            stored = directory / db_entry["stored"]
            for chunk in decrypt_chunks(stored, key=key, name=db_entry["name"]):
                out.write(chunk)
        load_database(plain)

    # Erased since the backup was taken: their rows go again now, their files are not put back.
    erased = erased_scan_uids()
    database_restored.send(sender=restore_backup, manifest=manifest)
    if erased and apps.get_model("imaging", "Scan").objects.filter(uid__in=erased).exists():
        raise BackupError(
            "the restored database still holds erased scans (the erasure ledger was not "
            "applied): run `manage.py erase --reapply` before starting the service"
        )
    erased_folders = tuple(f"scans/{uid}/" for uid in erased)
    for entry in manifest["files"]:
        if entry["kind"] == "media" and not entry["name"].startswith(erased_folders):
            _restore_file(directory, entry, key)
    return manifest


def _restore_file(directory: Path, entry: dict[str, Any], key: bytes) -> None:
    name = entry["name"]
    if default_storage.exists(name):
        default_storage.delete(name)
    with tempfile.TemporaryFile() as plain:
        for chunk in decrypt_chunks(
            directory / entry["stored"], key=key, name=f"{MEDIA_DIR}/{name}"
        ):
            plain.write(chunk)
        plain.seek(0)
        saved = default_storage.save(name, File(plain, name=os.path.basename(name)))
    if saved != name:
        default_storage.delete(saved)
        raise BackupError(f"{name} could not be put back under its own name")


def wipe_media() -> int:
    """Delete every stored file (the drill's "lost disk"); returns how many."""
    count = 0
    for name in list(stored_files()):
        default_storage.delete(name)
        count += 1
    root = Path(settings.MEDIA_ROOT)
    if root.exists() and not getattr(settings, "MEDIMG_S3_BUCKET", None):
        shutil.rmtree(root)
    return count
