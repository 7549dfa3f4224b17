from app import jobs


def test_every_job_name_is_registered_by_the_worker_app():
    from workers.celery_app import celery_app

    registered = set(celery_app.tasks)
    assert set(jobs.TASK_NAMES) <= registered, set(jobs.TASK_NAMES) - registered


def test_every_job_has_an_in_process_service_for_embedded_mode():
    import importlib

    for name, target in jobs.SERVICES.items():
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), name
