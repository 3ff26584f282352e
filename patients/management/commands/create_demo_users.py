"""`manage.py create_demo_users`: one active demo account per role, for `make run`.

Passwords are random and printed once, at creation. Run again, it changes nothing and prints
nothing secret: existing accounts keep their passwords.

Admins must log in with a second factor (accounts.otp), so the demo admin gets a confirmed
TOTP device too, and its secret is printed once with the password: add it to an authenticator
app (or `oathtool --totp -b SECRET`) to get the six-digit codes.

Departments, so that access following care is visible on the first login: Radiology and
Cardiology, each with a technician and a doctor (`tech` and `doctor` in Radiology, `cardiotech`
and `cardiodoctor` in Cardiology), and two demo patients registered in each department by its
technician (through the patient services, audited). `cardiodoctor` is also on the care team of
one Radiology patient. So `doctor` sees the two Radiology patients, `cardiodoctor` the two
Cardiology ones and that one, and the admin none. Patients are added once. Every run ends with
who works where and who sees which demo patient (no secrets).

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
from patients.services import patient_create, patient_set_care_team

DEMO_USERS = (
    ("tech", Role.TECHNICIAN),
    ("doctor", Role.DOCTOR),
    ("cardiotech", Role.TECHNICIAN),
    ("cardiodoctor", Role.DOCTOR),
    ("admin", Role.ADMIN),
)
DEMO_DEPARTMENTS = (("radiology", "Radiology"), ("cardiology", "Cardiology"))
# Who works where (slugs); the admin works nowhere: admins see no patient data.
DEMO_MEMBERSHIP = {
    "tech": ("radiology",),
    "doctor": ("radiology",),
    "cardiotech": ("cardiology",),
    "cardiodoctor": ("cardiology",),
}
# Who registers each department's patients, and one care-team member from elsewhere.
DEMO_REGISTRAR = {"radiology": "tech", "cardiology": "cardiotech"}
DEMO_CARE_TEAM = {"DEMO-R-001": ("cardiodoctor",)}
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
        added = []
        for patient_id, name, age, slug in DEMO_PATIENTS:
            registrar = User.objects.filter(
                username__iexact=DEMO_REGISTRAR[slug], role=Role.TECHNICIAN, is_active=True
            ).first()
            if registrar is None or Patient.objects.filter(pk=patient_id).exists():
                continue
            # Registered by the department's technician: the record joins their department.
            patient = patient_create(
                id=patient_id, name=name, age=age, created_by=registrar, note="Demo record."
            )
            members = User.objects.filter(username__in=DEMO_CARE_TEAM.get(patient_id, ()))
            if members:
                patient_set_care_team(patient=patient, members=list(members), actor=registrar)
            added.append(f"{patient_id} ({departments[slug].name})")
        if added:
            self.stdout.write("Demo patients added: " + ", ".join(added))
        self._summary()

    def _summary(self) -> None:
        self.stdout.write("Who works where and sees which demo patient:")
        for username, role in DEMO_USERS:
            user = User.objects.filter(username__iexact=username).first()
            if user is None:
                continue
            where = ", ".join(d.name for d in user.departments.all()) or "no department"
            seen = Patient.objects.visible_to(user).filter(pk__startswith="DEMO-")
            ids = ", ".join(sorted(seen.values_list("pk", flat=True))) or "none"
            self.stdout.write(f"  {username:<13} {role:<11} {where:<12} sees {ids}")
