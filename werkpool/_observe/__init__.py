"""The hooks werkpool ships: log records, the progress bar, and the metric rules that the
OpenTelemetry and Prometheus integrations share. They read events only.
"""
