"""The HTTP front: dependencies, error mapping, middlewares, schemas and one router per resource.

``service.main.create_app`` assembles them. Nothing here imports torch or the worker: uploads are
checked from their headers (``models.io``, ``service.registry``) and work is sent to Celery by name.
"""
