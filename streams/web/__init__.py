"""The worker's web server: Prometheus metrics, the read API, health checks and the dashboard.

Faust serves these views on the worker's web port (``WebSettings``). One module per concern:

* ``metrics.py``: avrec's Prometheus metrics (their own registry); ``views.py`` serves ``/metrics``.
* ``api.py``: the read API (recommendations, similar items, feedback, health, OpenAPI).
* ``dashboard.py``: the dashboard page and the JSON it polls.

Importing this package registers nothing: the services import ``streams.web.metrics``, and the view
modules import the services, so registering views on import would make a cycle. The worker calls
:func:`register_views` once, after its agents are imported.
"""


def register_views() -> None:
    """Register every web view on the Faust app (idempotent: a module is imported once)."""
    from streams.web import api, dashboard, views  # noqa: F401  (each registers its views on import)
