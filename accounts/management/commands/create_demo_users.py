"""`manage.py create_demo_users`: one active demo account per role, for `make run`.

Passwords are random and printed once, at creation. Run again, it changes nothing and prints
nothing secret: existing accounts keep their passwords.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from accounts.models import Role, User
from accounts.services import strong_password, user_create

DEMO_USERS = (("tech", Role.TECHNICIAN), ("doctor", Role.DOCTOR), ("admin", Role.ADMIN))


class Command(BaseCommand):
    help = "Create demo users tech, doctor and admin with random passwords (development only)."

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.PRODUCTION:
            raise CommandError("Demo users are for development; use adduser in production.")
        created = []
        for username, role in DEMO_USERS:
            if User.objects.filter(username__iexact=username).exists():
                self.stdout.write(f"Demo user {username!r} already exists; password unchanged.")
                continue
            password = strong_password()
            user_create(username=username, password=password, role=role, via="create_demo_users")
            created.append((username, role, password))
        if not created:
            self.stdout.write("Nothing to do: the passwords were shown when they were created.")
            return
        self.stdout.write(self.style.WARNING("Demo users created. Note the passwords now:"))
        for username, role, password in created:
            self.stdout.write(f"  {username:<8} {role:<11} {password}")
