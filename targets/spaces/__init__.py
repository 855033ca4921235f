"""Shipped design-space files for `edgesim sweep`."""
