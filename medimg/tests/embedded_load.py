"""Several people at once on the embedded install (`make run`: one process, SQLite file).

Run as a program (`python -m medimg.tests.embedded_load ROUNDS`) so that it gets the settings
`make run` gets: a SQLite file, not the test runner's in-memory database. Six doctors and a
technician work in threads, each with its own connection, on reads that write an audit row
(patient records, notes, the list) and on note writes. Prints one JSON line: status counts,
whether the audit chain verifies, and how many events it holds.
"""

from __future__ import annotations

import collections
import io
import json
import os
import sys
import tempfile
import threading


def main(rounds: int) -> dict[str, object]:
    folder = tempfile.mkdtemp(prefix="medimg-embedded-")
    os.environ["SQLITE_PATH"] = os.path.join(folder, "db.sqlite3")
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("REDIS_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "medimg.settings")

    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.test import Client

    from accounts.models import Department, Role, User

    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    settings.MEDIA_ROOT = os.path.join(folder, "media")
    settings.KEY_DIR = os.path.join(folder, "keys")
    call_command("migrate", verbosity=0)

    password = "load-test-password-42"
    doctors = [
        User.objects.create_user(username=f"doc{i}", password=password, role=Role.DOCTOR)
        for i in range(6)
    ]
    technician = User.objects.create_user(username="tech", password=password, role=Role.TECHNICIAN)
    # Everyone in one department, so the doctors see the technician's patients (issue 20).
    radiology = Department.objects.create(name="Radiology", slug="radiology")
    for user in (*doctors, technician):
        user.departments.add(radiology)
    patient_ids = [f"H-{1000 + i}" for i in range(3)]
    setup = Client()
    setup.force_login(technician)
    for number, patient_id in enumerate(patient_ids):
        response = setup.post(
            "/api/patients/",
            {"id": patient_id, "name": f"Load Person {number}", "age": 40},
            content_type="application/json",
        )
        assert response.status_code == 201, response.content

    statuses: collections.Counter[int] = collections.Counter()
    count_lock = threading.Lock()

    def work(user: User) -> None:
        client = Client(raise_request_exception=False)
        client.force_login(user)
        for _ in range(rounds):
            for patient_id in patient_ids:
                for url in (
                    f"/api/patients/{patient_id}/",
                    f"/api/patients/{patient_id}/notes/",
                    "/api/patients/",
                ):
                    status = client.get(url).status_code
                    with count_lock:
                        statuses[status] += 1
            status = client.post(
                f"/api/patients/{patient_ids[0]}/notes/",
                {"text": "Reviewed."},
                content_type="application/json",
            ).status_code
            with count_lock:
                statuses[status] += 1

    threads = [threading.Thread(target=work, args=(user,)) for user in doctors]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    stuck = sum(thread.is_alive() for thread in threads)

    from audit.models import AuditEvent

    out = io.StringIO()
    try:
        call_command("audit_verify", stdout=out, stderr=out)
        chain_ok = True
    except SystemExit as exc:
        chain_ok = exc.code in (0, None)
    return {
        "statuses": {str(code): count for code, count in sorted(statuses.items())},
        "stuck_threads": stuck,
        "chain_ok": chain_ok,
        "events": AuditEvent.objects.count(),
    }


if __name__ == "__main__":
    result = main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
    print(json.dumps(result))
    sys.stdout.flush()
    # Threads that never came back would keep the interpreter alive; the parent reads the line.
    os._exit(0)
