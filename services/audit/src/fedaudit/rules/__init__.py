"""The audit's rules: the catalogue (ids, families, severities), the per-job view they share,
and the checks of each family (data.py, algorithm.py, control.py)."""

from fedaudit.rules.catalogue import RULES, SEVERITIES, Finding, Rule, rule

__all__ = ["RULES", "SEVERITIES", "Finding", "Rule", "rule"]
