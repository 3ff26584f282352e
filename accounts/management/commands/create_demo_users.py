"""`manage.py create_demo_users`: one active demo account per role, for `make run`.

Passwords are random and printed once, at creation. Run again, it changes nothing and prints
nothing secret: existing accounts keep their passwords.

Admins must log in with a second factor (accounts.otp), so the demo admin gets a confirmed
TOTP device too, and its secret is printed once with the password: add it to an authenticator
app (or `oathtool --totp -b SECRET`) to get the six-digit codes.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from accounts.models import Role, User
from accounts.otp import otp_required_for, otp_secret_text
from accounts.services import strong_password, user_create

DEMO_USERS = (("tech", Role.TECHNICIAN), ("doctor", Role.DOCTOR), ("admin", Role.ADMIN))


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
