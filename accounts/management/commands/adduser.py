"""`manage.py adduser USERNAME --role ROLE`: create an active account, admins included."""

from __future__ import annotations

import getpass
import os
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import Role
from accounts.services import PasswordRejected, user_create
from engine.errors import EngineError, ErrorCode

PASSWORD_ENV = "MEDIMG_PASSWORD"


class Command(BaseCommand):
    help = (
        f"Create an active user with a role. The password comes from ${PASSWORD_ENV}, "
        "or is asked for twice. Role admin may use Django admin."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--role", required=True, choices=Role.values)
        parser.add_argument("--email", default="")

    def handle(self, *args: Any, username: str, role: str, email: str, **options: Any) -> None:
        password = os.environ.get(PASSWORD_ENV) or self._prompt()
        try:
            user = user_create(username=username, password=password, role=role, email=email)
        except PasswordRejected as exc:
            raise CommandError("Password refused: " + " ".join(exc.messages)) from None
        except EngineError as exc:
            if exc.code == ErrorCode.USERNAME_TAKEN:
                raise CommandError(f"User {username!r} already exists.") from None
            raise CommandError(exc.message) from None
        self.stdout.write(self.style.SUCCESS(f"Created {user.role} {user.username!r} (active)."))

    def _prompt(self) -> str:
        try:
            first = getpass.getpass("Password: ")
            second = getpass.getpass("Password (again): ")
        except (EOFError, KeyboardInterrupt):
            raise CommandError(f"No password: set ${PASSWORD_ENV} or run interactively.") from None
        if first != second:
            raise CommandError("The passwords do not match.")
        if not first:
            raise CommandError("The password must not be empty.")
        return first
