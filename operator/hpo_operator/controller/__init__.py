"""The operator process: one loop per experiment that observes, plans (planner/) and carries the
plan out (executor), with leader election, telemetry and the kopf glue. The top floor of the
operator side."""
