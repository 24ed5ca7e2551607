"""Reconcile logic per kind; main.py wires it to kopf."""
