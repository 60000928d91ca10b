"""Incremental mirroring for cron: jobs files, destination locks, sync rules, reports, bandwidth."""
