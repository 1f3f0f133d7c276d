"""The HTTP endpoints: ``app`` (routes), ``server`` (bounded, timed-out serving, TLS) and
``auth`` (the exporter-toolkit web configuration: TLS and basic authentication)."""
