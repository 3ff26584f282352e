from django.apps import AppConfig


class PatientsConfig(AppConfig):
    name = "patients"
    verbose_name = "Patients"

    def ready(self) -> None:
        # Every audit event about a patient seen only through an emergency grant is flagged,
        # whichever app records it (patients.emergency).
        from audit.services import audit_context_register
        from patients.emergency import break_glass_context

        audit_context_register(break_glass_context)
