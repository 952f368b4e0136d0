"""Backends behind the Platform API (users, courses, notify, analytics)."""
