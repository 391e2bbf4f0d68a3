"""A local Avara Viewer API server (FastAPI + SQLite) for demos, tests and rehearsals."""
