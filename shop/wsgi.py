"""The WSGI entry point: ``gunicorn -c shop/gunicorn_conf.py shop.wsgi:app``.

Settings come from the environment (see shop/config.py).
"""

from __future__ import annotations

from . import create_app
from .clusterview import start_heartbeat
from .logs import configure_logging

configure_logging()
app = create_app()
# Here, not in create_app: a thread must start in the worker gunicorn forked,
# and the many apps tests build must not each beat into the test Redis.
start_heartbeat(app)
