"""The chain's genesis anchor, and (PostgreSQL) a trigger that makes the log append-only."""

from django.db import migrations

GENESIS_HASH = "0" * 64

APPEND_ONLY_SQL = """
CREATE OR REPLACE FUNCTION audit_event_refuse_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_auditevent is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_event_append_only
    BEFORE UPDATE OR DELETE ON audit_auditevent
    FOR EACH ROW EXECUTE FUNCTION audit_event_refuse_change();
"""

DROP_SQL = """
DROP TRIGGER IF EXISTS audit_event_append_only ON audit_auditevent;
DROP FUNCTION IF EXISTS audit_event_refuse_change();
"""


def create_genesis(apps, schema_editor):
    AuditAnchor = apps.get_model("audit", "AuditAnchor")
    # mac stays empty for the genesis head: there is nothing to truncate yet.
    AuditAnchor.objects.get_or_create(pk=1, defaults={"sequence": 0, "hash": GENESIS_HASH})


def install_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        # params=None: the SQL holds a literal '%' (RAISE's placeholder), not a parameter.
        schema_editor.execute(APPEND_ONLY_SQL, params=None)


def remove_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP_SQL)


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]

    operations = [
        migrations.RunPython(create_genesis, migrations.RunPython.noop),
        migrations.RunPython(install_trigger, remove_trigger),
    ]
