from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.db import models
from django.utils import timezone


class Role(models.TextChoices):
    TECHNICIAN = "technician", "Lab technician"
    DOCTOR = "doctor", "Doctor"
    ADMIN = "admin", "Administrator"


CLINICAL_ROLES = frozenset({Role.TECHNICIAN, Role.DOCTOR})


class Department(models.Model):
    """A unit of care (Radiology, Cardiology). Clinical users and patients belong to one or
    more; a clinical user sees the patients of their departments (patients.models)."""

    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=50, unique=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class User(AbstractUser):
    """A user with exactly one role. Only an admin (Django admin or `adduser`) sets it."""

    role = models.CharField(max_length=16, choices=Role.choices)
    # Where the user works. Patients are visible through a shared department (or the care
    # team, or an emergency grant): see PatientQuerySet.visible_to.
    departments = models.ManyToManyField(Department, blank=True, related_name="members")
    # Access and refresh tokens issued before this moment are refused (accounts.tokens). Set
    # by accounts.services when the password changes or the account is deactivated.
    tokens_valid_after = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["username"]

    def set_password(self, raw_password: str | None) -> None:
        super().set_password(raw_password)
        # Every way a password is set (services, admin forms, `manage.py changepassword`)
        # ends the tokens issued before it; saved with the password by the caller's save().
        self.tokens_valid_after = timezone.now()

    def set_unusable_password(self) -> None:
        super().set_unusable_password()
        self.tokens_valid_after = timezone.now()

    @property
    def is_technician(self) -> bool:
        return self.is_active and self.role == Role.TECHNICIAN

    @property
    def is_doctor(self) -> bool:
        return self.is_active and self.role == Role.DOCTOR

    @property
    def is_admin_role(self) -> bool:
        return self.is_active and self.role == Role.ADMIN

    @property
    def is_clinical(self) -> bool:
        return self.is_active and self.role in CLINICAL_ROLES


class RevokedLogin(models.Model):
    """A logged-out API login (the `sid` its tokens carry), refused until its last access
    token would have expired anyway (accounts.tokens).

    In the database rather than the cache: every process sees it, and nothing evicts it early
    (a per-process cache holds 300 keys, then forgets the oldest logouts). Expired rows are
    purged on the next logout."""

    sid = models.CharField(max_length=64, unique=True)
    expires_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"login {self.sid} revoked until {self.expires_at:%Y-%m-%d %H:%M}"
