"""Evaluation: spacing-aware metrics, folder evaluation, paired statistics, reports and cross-dataset studies.

Modules: ``metrics`` (pure per-case functions), ``evaluate`` (a folder of
predictions against a folder of references), ``stats`` (paired comparisons),
``report`` (report.md and plots), ``cross_eval`` (models x test sets).
"""
