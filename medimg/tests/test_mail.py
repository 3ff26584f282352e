"""Mail through a real SMTP server (aiosmtpd on a free port) and Django's SMTP backend: each
event is triggered the way it happens in use, and the test reads what arrived."""

from __future__ import annotations

import email
import email.policy
import io
import json
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from django.db import connection
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import Role, User
from audit.models import Action, AuditEvent, Outcome
from audit.services import audit_record
from medimg import mail
from medimg.tasks import audit_chain_check, verify_audit_chain

pytestmark = pytest.mark.django_db

ALERTS = "security@hospital.example"
PRIVACY = "privacy.officer@hospital.example"


@dataclass
class Mailbox:
    """What the SMTP server received: (envelope recipients, parsed message)."""

    received: list[tuple[list[str], EmailMessage]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.received.append((list(envelope.rcpt_tos), message))  # type: ignore[arg-type]
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        with self.lock:
            return [message for rcpt, message in self.received if address in rcpt]

    def count(self) -> int:
        with self.lock:
            return len(self.received)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def smtp(settings: Any) -> Iterator[Mailbox]:
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=_free_port())
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = controller.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.DEFAULT_FROM_EMAIL = "medimg <medimg@hospital.example>"
    settings.ALERT_EMAIL = [ALERTS]
    settings.PRIVACY_OFFICER_EMAIL = [PRIVACY]
    settings.MEDIMG_BASE_URL = "https://medimg.hospital.example"
    try:
        yield mailbox
    finally:
        controller.stop()


def _body(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return part.get_content()


def test_admins_are_told_of_a_registration_and_the_user_of_the_activation(
    smtp: Mailbox, admin: Any, doctor: Any, django_capture_on_commit_callbacks: Any
) -> None:
    admin.email = "adam@hospital.example"
    admin.save(update_fields=["email"])
    doctor.email = "doris@hospital.example"
    doctor.save(update_fields=["email"])

    with django_capture_on_commit_callbacks(execute=True):
        response = APIClient().post(
            "/api/auth/register/",
            {
                "username": "newbie",
                "password": "a-long-enough-passphrase-77",
                "role": "technician",
                "email": "newbie@hospital.example",
            },
            format="json",
        )
    assert response.status_code in (201, 202), response.content
    newbie = User.objects.get(username="newbie")
    assert not newbie.is_active

    [told] = smtp.to("adam@hospital.example")
    assert told["Subject"] == "[medimg] Account waiting for activation: newbie"
    assert told["From"] == "medimg <medimg@hospital.example>"
    body = _body(told)
    assert "Requested role: technician" in body
    assert f"https://medimg.hospital.example/admin/accounts/user/{newbie.pk}/change/" in body
    # Only admins: not the doctor, not the newcomer, not the alert address.
    assert smtp.count() == 1
    assert "a-long-enough-passphrase-77" not in body

    # The admin activates the account with the admin site's action.
    client = Client()
    client.force_login(admin)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            "/admin/accounts/user/",
            {"action": "activate_users", "_selected_action": [str(newbie.pk)]},
        )
    assert response.status_code == 302
    newbie.refresh_from_db()
    assert newbie.is_active
    [activated] = smtp.to("newbie@hospital.example")
    assert activated["Subject"] == "[medimg] Your account is active"
    assert "https://medimg.hospital.example/login/" in _body(activated)

    # Activating an active account again changes nothing and sends nothing.
    with django_capture_on_commit_callbacks(execute=True):
        client.post(
            "/admin/accounts/user/",
            {"action": "activate_users", "_selected_action": [str(newbie.pk)]},
        )
    assert len(smtp.to("newbie@hospital.example")) == 1


def test_a_taken_name_sends_nothing(
    smtp: Mailbox, admin: Any, technician: Any, django_capture_on_commit_callbacks: Any
) -> None:
    admin.email = "adam@hospital.example"
    admin.save(update_fields=["email"])
    with django_capture_on_commit_callbacks(execute=True):
        response = APIClient().post(
            "/api/auth/register/",
            {"username": "tina", "password": "a-long-enough-passphrase-77", "role": "doctor"},
            format="json",
        )
    assert response.status_code in (201, 202)
    assert smtp.count() == 0


def test_without_admin_addresses_the_alert_address_hears_of_registrations(
    smtp: Mailbox, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        APIClient().post(
            "/api/auth/register/",
            {"username": "solo", "password": "a-long-enough-passphrase-77", "role": "doctor"},
            format="json",
        )
    [told] = smtp.to(ALERTS)
    assert "solo" in told["Subject"]


def test_a_lockout_alerts_once(
    smtp: Mailbox, technician: Any, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    client = Client()
    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(settings.AXES_FAILURE_LIMIT + 3):
            client.post("/login/", {"username": "tina", "password": "wrong-password"})
    [alert] = smtp.to(ALERTS)
    assert alert["Subject"] == "[medimg] Login locked out: tina"
    body = _body(alert)
    assert "Client address: 127.0.0.1" in body
    assert "wrong-password" not in body


def test_a_lockout_through_the_api_alerts_too(
    smtp: Mailbox, doctor: Any, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    api = APIClient()
    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(settings.AXES_FAILURE_LIMIT + 1):
            api.post("/api/auth/token/", {"username": "doris", "password": "nope"}, format="json")
    assert [m["Subject"] for m in smtp.to(ALERTS)] == ["[medimg] Login locked out: doris"]


def test_a_broken_audit_chain_alerts(
    smtp: Mailbox, technician: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from audit.tests.conftest import tamper

    for n in range(3):
        audit_record(action=Action.PATIENT_VIEWED, actor=technician, target_id=n)
    assert verify_audit_chain.apply().get() is True
    assert smtp.count() == 0

    second = AuditEvent.objects.get(sequence=2)
    tamper(
        f"UPDATE {AuditEvent._meta.db_table} SET target_id = %s WHERE id = %s",
        ("999", second.pk),
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert audit_chain_check("test") is False
    [alert] = smtp.to(ALERTS)
    assert alert["Subject"] == "[medimg] Integrity check failed: audit chain"
    assert "first bad sequence 2" in _body(alert)


def test_audit_verify_on_a_broken_chain_alerts(
    smtp: Mailbox, technician: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from django.core.management import call_command

    from audit.tests.conftest import tamper

    for n in range(3):
        audit_record(action=Action.PATIENT_VIEWED, actor=technician, target_id=n)
    with django_capture_on_commit_callbacks(execute=True):
        call_command("audit_verify", stdout=io.StringIO())
    assert smtp.count() == 0
    second = AuditEvent.objects.get(sequence=2)
    tamper(
        f"UPDATE {AuditEvent._meta.db_table} SET target_id = %s WHERE id = %s",
        ("999", second.pk),
    )
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(SystemExit) as exit_:
        call_command("audit_verify", stdout=io.StringIO(), stderr=io.StringIO())
    assert exit_.value.code == 1
    [alert] = smtp.to(ALERTS)
    assert alert["Subject"] == "[medimg] Integrity check failed: audit chain"
    assert "audit_verify" in _body(alert) and "first bad sequence 2" in _body(alert)


@pytest.mark.django_db(transaction=True)
def test_a_tampered_backup_alerts_on_restore(smtp: Mailbox, technician: Any, tmp_path: Any) -> None:
    from django.core.management import call_command
    from django.core.management.base import CommandError

    audit_record(action=Action.PATIENT_VIEWED, actor=technician, target_id=1)
    call_command("backup", out=str(tmp_path / "backup"), stdout=io.StringIO())
    database = next((tmp_path / "backup").glob("database.*.enc"))
    data = bytearray(database.read_bytes())
    data[-5] ^= 0x01
    database.write_bytes(bytes(data))
    assert smtp.count() == 0
    with pytest.raises(CommandError, match="does not match its SHA-256"):
        call_command("restore_backup", str(tmp_path / "backup"), "--force")
    [alert] = smtp.to(ALERTS)
    assert alert["Subject"] == "[medimg] Integrity check failed: backup"
    assert "does not match its SHA-256" in _body(alert)
    # A backup that is only unreadable for another reason (not found) is no integrity alert.
    with pytest.raises(CommandError):
        call_command("restore_backup", str(tmp_path / "nowhere"), "--force")
    assert smtp.count() == 1


def test_a_tampered_region_alerts_on_restore(
    smtp: Mailbox,
    technician: Any,
    doctor: Any,
    settings: Any,
    django_capture_on_commit_callbacks: Any,
    eager_tasks: None,
) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from imaging.models import Region, Scan
    from imaging.tests import factories
    from patients.models import Patient

    settings.IMAGING_DETECTOR = "imaging.tests.factories.bright_text_detector"
    patient = Patient.objects.create(id="MRN-MAIL-1", name="Jane Doe", age=54)
    api = APIClient()
    api.force_authenticate(technician)
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            f"/api/patients/{patient.id}/images/",
            {
                "files": [
                    SimpleUploadedFile(
                        "scan.png", factories.png_bytes(factories.text_image(320, 240))
                    )
                ]
            },
            format="multipart",
        )
    assert response.status_code == 201, response.content
    scan = Scan.objects.get(pk=response.json()[0]["id"])
    assert scan.status == "completed", scan.failure_reason
    region = scan.regions.order_by("index").last()
    tampered = bytearray(region.ciphertext)
    tampered[-1] ^= 1
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Region._meta.db_table} SET ciphertext = %s WHERE id = %s",
            [bytes(tampered), region.pk],
        )
    assert smtp.count() == 0

    api.force_authenticate(doctor)
    with django_capture_on_commit_callbacks(execute=True):
        restored = api.post(f"/api/images/{scan.pk}/restore/", {}, format="json")
    assert restored.status_code == 500
    [alert] = smtp.to(ALERTS)
    assert alert["Subject"] == "[medimg] Integrity check failed: restore"
    body = _body(alert)
    assert f"scan {scan.pk}" in body and "doris" in body
    assert "Jane" not in body and "MRN-MAIL-1" not in body


def test_emergency_access_goes_to_the_privacy_officer_and_the_alert_address(
    smtp: Mailbox, doctor: Any, django_capture_on_commit_callbacks: Any
) -> None:
    expires = timezone.now() + timedelta(hours=4)
    with django_capture_on_commit_callbacks(execute=True):
        sent = mail.notify_emergency_access(
            doctor, "a1b2c3d4e5f6", "Unconscious patient in ED", expires
        )
    assert sent == 2
    [to_officer] = smtp.to(PRIVACY)
    [to_alerts] = smtp.to(ALERTS)
    assert to_officer["Subject"] == "[medimg] Emergency access by doris"
    body = _body(to_officer)
    assert "Patient reference: a1b2c3d4e5f6" in body
    assert "Reason given: Unconscious patient in ED" in body
    assert timezone.localtime(expires).strftime("%Y-%m-%d %H:%M") in body
    # One message per recipient: neither sees the other's address.
    assert PRIVACY not in str(to_alerts["To"]) and ALERTS not in str(to_officer["To"])


def test_a_username_cannot_add_mail_headers(
    smtp: Mailbox, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        mail.alert_lockout("mallory\r\nBcc: victim@example.org", "192.0.2.1")
    [alert] = smtp.to(ALERTS)
    assert alert["Bcc"] is None
    assert smtp.count() == 1


def test_a_mail_server_that_is_down_does_not_fail_the_action(
    smtp: Mailbox, settings: Any, admin: Any, django_capture_on_commit_callbacks: Any
) -> None:
    admin.email = "adam@hospital.example"
    admin.save(update_fields=["email"])
    settings.EMAIL_PORT = _free_port()  # nothing listens there
    with django_capture_on_commit_callbacks(execute=True):
        response = APIClient().post(
            "/api/auth/register/",
            {"username": "unlucky", "password": "a-long-enough-passphrase-77", "role": "doctor"},
            format="json",
        )
    assert response.status_code in (201, 202)
    assert User.objects.filter(username="unlucky").exists()


# --- Password reset ---------------------------------------------------------------------------


def _reset_link(message: EmailMessage) -> str:
    found = re.search(r"https?://[^/\s]+(/password-reset/[^/\s]+/[^/\s]+/)", _body(message))
    assert found, _body(message)
    return found.group(1)


def test_the_login_page_links_to_the_password_reset(client: Client) -> None:
    page = client.get("/login/").content.decode()
    assert 'href="/password-reset/"' in page and "Forgot password?" in page


def test_a_password_reset_by_mail(smtp: Mailbox, doctor: Any, password: str) -> None:
    doctor.email = "doris@hospital.example"
    doctor.save(update_fields=["email"])
    old_password_hash = User.objects.get(pk=doctor.pk).password
    client = Client()
    response = client.post("/password-reset/", {"email": "DORIS@hospital.example"})
    assert response.status_code == 302 and response["Location"] == "/password-reset/sent/"

    [message] = smtp.to("doris@hospital.example")
    assert message["Subject"] == "Reset your medimg password"
    link = _reset_link(message)
    # Django swaps the token for a session-held one and redirects to the form.
    form_page = client.get(link, follow=True)
    assert form_page.status_code == 200
    assert b"Choose a new password" in form_page.content
    assert b'name="new_password1"' in form_page.content
    new_password = "a-brand-new-passphrase-91"
    done = client.post(
        form_page.redirect_chain[-1][0],
        {"new_password1": new_password, "new_password2": new_password},
    )
    assert done.status_code == 302 and done["Location"] == "/password-reset/done/"
    doctor.refresh_from_db()
    assert doctor.password != old_password_hash and doctor.check_password(new_password)
    # The password change revoked tokens issued before it.
    assert doctor.tokens_valid_after is not None
    requested, completed = AuditEvent.objects.filter(action=Action.PASSWORD_RESET).order_by(
        "sequence"
    )
    assert requested.details["stage"] == "requested" and requested.target_id == str(doctor.pk)
    assert requested.details["accounts_mailed"] == 1 and requested.details["address_hmac"]
    assert completed.details["stage"] == "completed" and completed.target_id == str(doctor.pk)
    # No e-mail address in clear anywhere in the log.
    for event in AuditEvent.objects.all():
        assert "hospital.example" not in json.dumps(event.details) + event.target_id
    # The link works once.
    again = Client().get(link, follow=True)
    assert b"This link does not work any more" in again.content
    # The new password logs in.
    login = Client().post("/login/", {"username": "doris", "password": new_password})
    assert login.status_code == 302


def test_an_unknown_or_inactive_address_gets_the_same_answer_and_no_mail(
    smtp: Mailbox, doctor: Any
) -> None:
    doctor.email = "doris@hospital.example"
    doctor.is_active = False
    doctor.save(update_fields=["email", "is_active"])
    for address in ("nobody@hospital.example", "doris@hospital.example"):
        response = Client().post("/password-reset/", {"email": address})
        assert response.status_code == 302 and response["Location"] == "/password-reset/sent/"
    assert smtp.count() == 0
    # Both asked and audited the same way: no account mailed, the address as a keyed hash.
    events = AuditEvent.objects.filter(action=Action.PASSWORD_RESET)
    assert [e.details["accounts_mailed"] for e in events] == [0, 0]
    assert events[0].details["address_hmac"] != events[1].details["address_hmac"]


def test_password_reset_requests_are_limited(smtp: Mailbox, settings: Any) -> None:
    settings.MEDIMG_PASSWORD_RESETS_PER_HOUR = 2
    client = Client()
    codes = [
        client.post("/password-reset/", {"email": "x@hospital.example"}).status_code
        for _ in range(3)
    ]
    assert codes == [302, 302, 429]
    refused = AuditEvent.objects.get(action=Action.PASSWORD_RESET, outcome=Outcome.REFUSED)
    assert refused.details["stage"] == "requested"


def test_registration_and_roles_are_unchanged_for_admin_created_users(smtp: Mailbox) -> None:
    # `adduser` creates an active account: nobody needs to be told to activate it.
    from accounts.services import user_create

    user_create(username="ops", password="a-long-enough-passphrase-77", role=Role.ADMIN)
    assert smtp.count() == 0
