"""The front: CLI now; the FastAPI app, settings, database, artifact store and client later.

Nothing here imports torch at module level: the API process must stay free of it.
"""
