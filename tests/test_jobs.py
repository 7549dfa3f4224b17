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


def test_the_workers_register_no_task_that_jobs_does_not_name():
    from workers.celery_app import celery_app

    ours = {name for name in celery_app.tasks if not name.startswith("celery.")}
    assert ours == set(jobs.TASK_NAMES)


def _task_targets() -> dict[str, str]:
    """Task name -> "module:function" that the worker task calls, read from workers/*.py."""
    import ast
    from pathlib import Path

    targets = {}
    for path in sorted((Path(__file__).resolve().parent.parent / "workers").glob("*.py")):
        tree = ast.parse(path.read_text())
        aliases = {
            alias.asname or alias.name: f"{node.module}.{alias.name}"
            for node in tree.body
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("app")
            for alias in node.names
        }
        for func in (n for n in tree.body if isinstance(n, ast.FunctionDef)):
            names = [
                kw.value.value
                for d in func.decorator_list
                if isinstance(d, ast.Call)
                for kw in d.keywords
                if kw.arg == "name"
            ]
            calls = [
                f"{aliases[c.func.value.id]}:{c.func.attr}"
                for c in ast.walk(func)
                if isinstance(c, ast.Call)
                and isinstance(c.func, ast.Attribute)
                and isinstance(c.func.value, ast.Name)
                and c.func.value.id in aliases
            ]
            if names and calls:
                targets[names[0]] = calls[0]
    return targets


def test_each_task_runs_the_service_that_embedded_mode_runs_in_process():
    assert _task_targets() == jobs.SERVICES


def test_jobs_run_services_of_the_domain_never_of_a_blueprint():
    domains = ("app.orders.", "app.billing.", "app.routing.")
    assert all(target.startswith(domains) for target in jobs.SERVICES.values())
