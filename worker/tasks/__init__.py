"""Celery tasks. Each task body is a plain function the tests call without a broker."""
