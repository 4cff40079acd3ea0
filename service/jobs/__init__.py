"""Jobs between the API, the worker and the reaper, written down once.

- :mod:`service.jobs.tasks`: the task names, the queue each goes to, the sender's Celery
  configuration and ``TaskSender``, which the API and the reaper both send with.
- :mod:`service.jobs.registration` and :mod:`service.jobs.training`: each job kind's ``params``
  and ``result`` as pydantic models (on :mod:`service.jobs.schema`), so that neither side reads the
  JSON columns as untyped dicts.

Torch-free and free of worker code: the API process imports them. Nothing is re-exported here, so
that the worker's health check, which loads the task names, does not load the image readers that
the registration params name their roles from.
"""
