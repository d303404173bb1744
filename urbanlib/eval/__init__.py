"""Downstream evaluation: MLP probes on frozen region features, metrics, and the papers' tables."""
