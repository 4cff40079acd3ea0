"""The Celery app and its tasks: read a job row, call models/, write progress and results back.

Imports models/ and the service's state modules (settings, database, storage, registry), never the
HTTP app. ``worker.celery_app`` imports no torch (the health check imports it every minute); the
tasks import the science when they run.
"""
