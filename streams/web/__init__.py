"""The worker's web server: Prometheus metrics, the read API, health checks and the dashboard.

Faust serves these views on the worker's web port (``WebSettings``); importing this
package registers them on the app. One module per concern:

* ``metrics.py``: avrec's Prometheus metrics (their own registry); ``views.py`` serves ``/metrics``.
* ``api.py``: the read API (recommendations, similar items, feedback, health, OpenAPI).
* ``dashboard.py``: the dashboard page and the JSON it polls.
"""

from streams.web import api, dashboard, views  # noqa: F401  (each registers its views on the app)
