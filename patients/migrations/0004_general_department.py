"""Existing installs keep working: every clinical user and every patient that exists when
departments arrive is put into one "General" department, so everyone still sees what they saw.
A fresh database (no users, no patients) gets no department; admins create them."""

from django.db import migrations

CLINICAL_ROLES = ("technician", "doctor")


def into_general(apps, schema_editor):
    Department = apps.get_model("accounts", "Department")
    User = apps.get_model("accounts", "User")
    Patient = apps.get_model("patients", "Patient")
    users = User.objects.filter(role__in=CLINICAL_ROLES)
    if not users.exists() and not Patient.objects.exists():
        return
    general, _ = Department.objects.get_or_create(slug="general", defaults={"name": "General"})
    general.members.add(*users)
    general.patients.add(*Patient.objects.all())


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0004_department_user_departments"),
        ("patients", "0003_departments_care_team_break_glass"),
    ]

    operations = [migrations.RunPython(into_general, migrations.RunPython.noop)]
