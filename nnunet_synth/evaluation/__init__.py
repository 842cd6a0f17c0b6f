"""Evaluation: spacing-aware metrics, folder evaluation, paired statistics, reports and cross-dataset studies.

Modules: ``metrics`` (pure per-case functions), ``aggregate`` (means over
cases), ``files`` (reading with one-line errors; which outputs may be
replaced), ``evaluate`` (a folder of predictions against a folder of references),
``stats`` (paired tests of two models), ``testsets`` (reading test sets and
their labels), ``prediction`` (trained models and their predictions),
``comparison`` (every model against the baseline), ``report`` (report.md and
plots), ``cross_eval`` (models x test sets, end to end).
"""
