"""Every metric name sipwatch exposes, in one place.

Dashboards (``dashboards/``), alert rules (``prometheus/``), the generated reference
(``docs/metrics.md``) and the tests refer to these spellings; a stage collector never writes
a name literally.  Counters carry their ``_total``; histograms are named by their family.
"""

from __future__ import annotations

from typing import Final

BUILD_INFO: Final = "sipwatch_build_info"

# ---- ingest (sipwatch.metrics.ingest)
LOG_LINES: Final = "sipwatch_log_lines_total"
LOG_RECORDS: Final = "sipwatch_log_records_total"
PARSE_ERRORS: Final = "sipwatch_parse_errors_total"
SIP_MESSAGES: Final = "sipwatch_sip_messages_total"
SIP_TRUNCATED: Final = "sipwatch_sip_truncated_messages_total"
SERVICE_EVENTS: Final = "sipwatch_service_events_total"
SOURCE_LAST_EVENT: Final = "sipwatch_source_last_event_timestamp_seconds"

# ---- sources and queues (sipwatch.metrics.sources)
SOURCE_UP: Final = "sipwatch_source_up"
SOURCE_RECONNECTS: Final = "sipwatch_source_reconnects_total"
SOURCE_NODE: Final = "sipwatch_source_node_info"
QUEUE_DEPTH: Final = "sipwatch_queue_depth"
QUEUE_CAPACITY: Final = "sipwatch_queue_capacity"
QUEUE_DROPS: Final = "sipwatch_queue_drops_total"

# ---- REGISTER transactions and attempts (sipwatch.metrics.register)
REGISTER_TRANSACTIONS: Final = "sipwatch_register_transactions_total"
REGISTER_RETRANSMISSIONS: Final = "sipwatch_register_retransmissions_total"
REGISTER_LATENCY: Final = "sipwatch_register_latency_seconds"
REGISTER_ATTEMPTS: Final = "sipwatch_register_attempts_total"
REGISTER_ATTEMPT_DURATION: Final = "sipwatch_register_attempt_duration_seconds"
REGISTER_INFLIGHT_TRANSACTIONS: Final = "sipwatch_register_inflight_transactions"
REGISTER_INFLIGHT_ATTEMPTS: Final = "sipwatch_register_inflight_attempts"
REGISTER_SCANNER_ATTEMPTS: Final = "sipwatch_register_scanner_attempts_total"
REGISTER_ORPHAN_RESPONSES: Final = "sipwatch_register_orphan_responses_total"
REGISTER_STATE_EVICTIONS: Final = "sipwatch_register_state_evictions_total"

# ---- per-user / per-IP offenders (sipwatch.metrics.offenders)
USER_FAILURES: Final = "sipwatch_register_user_failures_total"
USER_FAILING: Final = "sipwatch_register_user_failing"
IP_FAILURES: Final = "sipwatch_register_ip_failures_total"
IP_DISTINCT_USERS: Final = "sipwatch_register_ip_distinct_users"
SCANNER_SOURCES: Final = "sipwatch_register_scanner_sources"
LABEL_TRACKER_EXPOSED: Final = "sipwatch_label_tracker_exposed"
LABEL_TRACKER_TRACKED: Final = "sipwatch_label_tracker_tracked"
LABEL_TRACKER_LIMIT: Final = "sipwatch_label_tracker_limit"
LABEL_TRACKER_FOLDED: Final = "sipwatch_label_tracker_folded_total"
LABEL_TRACKER_EVICTIONS: Final = "sipwatch_label_tracker_evictions_total"

# ---- diagnosis, alerts, remediation (sipwatch.metrics.diagnosis)
ROOT_CAUSES: Final = "sipwatch_root_causes_total"
DIAGNOSIS_ERRORS: Final = "sipwatch_diagnosis_errors_total"
ALERTS: Final = "sipwatch_alerts_total"
REMEDIATIONS: Final = "sipwatch_remediations_total"
