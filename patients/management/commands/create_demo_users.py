"""`manage.py create_demo_users`: one active demo account per role, for `make run`.

Passwords are random and printed once, at creation. Run again, it changes nothing and prints
nothing secret: existing accounts keep their passwords.

Admins must log in with a second factor (accounts.otp), so the demo admin gets a confirmed
TOTP device too, and its secret is printed once with the password: add it to an authenticator
app (or `oathtool --totp -b SECRET`) to get the six-digit codes.

Departments, so that access following care is visible on the first login: the technician works
in Radiology and Cardiology, the doctor in Radiology only, and two demo patients are registered
in each department (through the patient services, audited). The doctor sees the two Radiology
patients and not the Cardiology ones; the technician sees all four. Patients are added once.

It lives in patients, not accounts, because it makes patients as well as users: patients may use
accounts, never the other way round (docs/architecture.md).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from accounts.models import Department, Role, User
from accounts.otp import otp_required_for, otp_secret_text
from accounts.services import strong_password, user_create
from patients.models import Patient
from patients.services import patient_create, patient_set_departments

DEMO_USERS = (("tech", Role.TECHNICIAN), ("doctor", Role.DOCTOR), ("admin", Role.ADMIN))
DEMO_DEPARTMENTS = (("radiology", "Radiology"), ("cardiology", "Cardiology"))
# Who works where (slugs); the admin works nowhere: admins see no patient data.
DEMO_MEMBERSHIP = {"tech": ("radiology", "cardiology"), "doctor": ("radiology",)}
# (hospital id, name, age, department): synthetic people, two per department.
DEMO_PATIENTS = (
    ("DEMO-R-001", "Ada Radiology", 54, "radiology"),
    ("DEMO-R-002", "Alan Radiology", 41, "radiology"),
    ("DEMO-C-001", "Grace Cardiology", 67, "cardiology"),
    ("DEMO-C-002", "Emmy Cardiology", 73, "cardiology"),
)


class Command(BaseCommand):
    help = "Create demo users tech, doctor and admin with random passwords (development only)."

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.PRODUCTION:
            raise CommandError("Demo users are for development; use adduser in production.")
        created = []
        secrets: list[tuple[str, str, str]] = []
        for username, role in DEMO_USERS:
            if User.objects.filter(username__iexact=username).exists():
                self.stdout.write(f"Demo user {username!r} already exists; password unchanged.")
                continue
            password = strong_password()
            user = user_create(
                username=username, password=password, role=role, via="create_demo_users"
            )
            created.append((username, role, password))
            if otp_required_for(user):
                from django_otp.plugins.otp_totp.models import TOTPDevice

                device = TOTPDevice.objects.create(user=user, name="demo", confirmed=True)
                secrets.append((username, otp_secret_text(device), device.config_url))
        self._departments_and_patients()
        if not created:
            self.stdout.write("Nothing to do: the passwords were shown when they were created.")
            return
        self.stdout.write(self.style.WARNING("Demo users created. Note the passwords now:"))
        for username, role, password in created:
            self.stdout.write(f"  {username:<8} {role:<11} {password}")
        for username, secret, url in secrets:
            self.stdout.write(
                self.style.WARNING(f"Two-factor secret of {username} (authenticator app, TOTP):")
            )
            self.stdout.write(f"  secret {secret}\n  url    {url}")

    def _departments_and_patients(self) -> None:
        departments = {
            slug: Department.objects.get_or_create(slug=slug, defaults={"name": name})[0]
            for slug, name in DEMO_DEPARTMENTS
        }
        for username, slugs in DEMO_MEMBERSHIP.items():
            user = User.objects.filter(username__iexact=username).first()
            if user is not None:
                user.departments.add(*(departments[slug] for slug in slugs))
        tech = User.objects.filter(username__iexact="tech", role=Role.TECHNICIAN).first()
        if tech is None or not tech.is_active:
            return
        added = []
        for patient_id, name, age, slug in DEMO_PATIENTS:
            if Patient.objects.filter(pk=patient_id).exists():
                continue
            # Registered by the technician (in both departments), then kept in one.
            patient = patient_create(
                id=patient_id, name=name, age=age, created_by=tech, note="Demo record."
            )
            patient_set_departments(patient=patient, departments=[departments[slug]], actor=tech)
            added.append(f"{patient_id} ({departments[slug].name})")
        if added:
            self.stdout.write("Demo patients: " + ", ".join(added))
            self.stdout.write(
                "  tech works in Radiology and Cardiology and sees all of them; "
                "doctor works in Radiology and sees only the Radiology ones."
            )
