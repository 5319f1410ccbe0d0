"""Thin kopf handlers: read the object and what it owns, call a pure reconciler, act on its plan."""
