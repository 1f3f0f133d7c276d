"""Build the diagnosis input (``Symptom``) from what the pipeline saw.

One place for this so ``replay`` and the daemon ask the rules exactly the same question.
"""

from __future__ import annotations

from sipwatch.diagnosis.symptom import Symptom
from sipwatch.ingest.sip import request_uri_host
from sipwatch.pipeline.context import FailureContext
from sipwatch.pipeline.failures import FailureRecord
from sipwatch.pipeline.scanners import ScannerClassifier
from sipwatch.sip_meaning import TIMEOUT


def symptom_from_record(
    record: FailureRecord, context: FailureContext, scanners: ScannerClassifier
) -> Symptom:
    """The Symptom of one failure group (user, domain, source IP, status)."""
    request_uri, auth_username = context.request_info(record.source_ip, record.user, record.domain)
    status = 0 if record.status == TIMEOUT else record.status
    assert isinstance(status, int)
    return Symptom(
        user=record.user,
        domain=record.domain,
        source_ip=record.source_ip or None,
        status=status,
        x_reason=record.x_reason,
        challenged=record.challenged,
        request_uri_host=request_uri_host(request_uri) or None if request_uri else None,
        auth_username=auth_username or None,
        user_agent=record.user_agent or None,
        registrar_events=context.events_near(
            record.first_seen,
            record.last_seen,
            record.domain,
            record.status,
            x_reason=record.x_reason,
            challenged=record.challenged,
        ),
        distinct_users_from_ip=max(
            scanners.distinct_users(record.source_ip), record.distinct_users
        ),
        failures_from_ip=scanners.rejections(record.source_ip),
        registered_before=context.registered_before(record.user, record.domain, record.first_seen),
    )
