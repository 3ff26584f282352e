"""The investigator's form: find the audit events about one patient by hospital id.

The log names patients only by pseudonym (audit.pseudonyms), so an investigator who has a
hospital id types it here; audit.services.audit_find_patient_events hashes it and searches,
and records the search itself. The id is not kept in the form's output or the log.
"""

from __future__ import annotations

from django import forms


class PatientEventSearchForm(forms.Form):
    hospital_id = forms.CharField(
        label="Hospital patient id",
        max_length=64,
        strip=True,
        help_text=(
            "Found: events about this patient and patient searches for exactly this id. "
            "The search is recorded in the audit log (by the patient's reference)."
        ),
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )
