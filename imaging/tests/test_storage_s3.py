"""S3-compatible storage by environment (django-storages), against moto's in-process S3.

moto implements the S3 API itself (buckets, objects, ACLs) inside the test process, so these
tests run the real django-storages and boto3 code offline; no network, no real bucket.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.files.storage import default_storage

from imaging.vault.storage import storage_delete, storage_read, storage_write

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "medimg-test"


def _settings_in_subprocess(env: dict[str, str]) -> dict[str, Any]:
    code = (
        "import django, json, os;"
        "os.environ['DJANGO_SETTINGS_MODULE'] = 'medimg.settings';"
        "django.setup();"
        "from django.conf import settings;"
        "print(json.dumps(settings.STORAGES['default']))"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MEDIMG_S3_")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**clean, **env},
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_it_keeps_local_disk_without_a_bucket() -> None:
    default = _settings_in_subprocess({})
    assert default["BACKEND"] == "imaging.vault.storage.AtomicFileSystemStorage"


def test_it_configures_s3_from_the_environment() -> None:
    default = _settings_in_subprocess(
        {
            "MEDIMG_S3_BUCKET": "scans",
            "MEDIMG_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
            "MEDIMG_S3_REGION": "eu-west-2",
            "MEDIMG_S3_ACCESS_KEY_ID": "AKIDEXAMPLE",
            "MEDIMG_S3_SECRET_ACCESS_KEY": "secret",
            "MEDIMG_S3_PREFIX": "medimg",
        }
    )
    assert default["BACKEND"] == "storages.backends.s3.S3Storage"
    options = default["OPTIONS"]
    assert options["bucket_name"] == "scans"
    assert options["endpoint_url"] == "http://127.0.0.1:9000"
    assert options["location"] == "medimg"
    assert options["default_acl"] == "private"
    assert options["file_overwrite"] is False


@pytest.fixture
def s3_storage(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    moto = pytest.importorskip("moto")
    import boto3

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with moto.mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        settings.STORAGES = {
            **settings.STORAGES,
            "default": {
                "BACKEND": "storages.backends.s3.S3Storage",
                "OPTIONS": {
                    "bucket_name": BUCKET,
                    "region_name": "us-east-1",
                    "default_acl": "private",
                    "file_overwrite": False,
                },
            },
        }
        # Django's setting_changed handler drops the cached default storage, now and after.
        yield boto3.client("s3", region_name="us-east-1")


def test_it_stores_reads_and_deletes_through_s3(s3_storage: Any) -> None:
    from storages.backends.s3 import S3Storage

    name = storage_write("scans/1/original.bin", b"ciphertext-bytes")
    assert isinstance(default_storage._wrapped, S3Storage)  # type: ignore[attr-defined]
    assert storage_read(name) == b"ciphertext-bytes"
    listed = s3_storage.list_objects_v2(Bucket=BUCKET)["Contents"]
    assert [o["Key"] for o in listed] == [name]
    grants = s3_storage.get_object_acl(Bucket=BUCKET, Key=name)["Grants"]
    assert all(g["Grantee"].get("URI") is None for g in grants)  # private: no group grants

    storage_delete(name)
    assert s3_storage.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0


def test_it_never_overwrites_an_object_on_s3(s3_storage: Any) -> None:
    first = storage_write("scans/2/redacted.png", b"first")
    second = storage_write("scans/2/redacted.png", b"second")
    assert first != second
    assert storage_read(first) == b"first"
    assert storage_read(second) == b"second"
