"""Shipped hardware targets: one YAML file per target (data only; see hwmodels.target)."""
