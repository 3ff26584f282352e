from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.db import models


class Role(models.TextChoices):
    TECHNICIAN = "technician", "Lab technician"
    DOCTOR = "doctor", "Doctor"
    ADMIN = "admin", "Administrator"


CLINICAL_ROLES = frozenset({Role.TECHNICIAN, Role.DOCTOR})


class User(AbstractUser):
    """A user with exactly one role. Only an admin (Django admin or `adduser`) sets it."""

    role = models.CharField(max_length=16, choices=Role.choices)
    # Access and refresh tokens issued before this moment are refused (accounts.tokens). Set
    # by accounts.services when the password changes or the account is deactivated.
    tokens_valid_after = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["username"]

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
