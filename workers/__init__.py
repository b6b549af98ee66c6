"""The worker side: one Celery worker for one device of the inventory (``python -m workers``)."""
