"""An example LLM gateway: FastAPI under Gunicorn, calling fake in-process providers."""
