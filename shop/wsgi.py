"""The WSGI entry point: ``gunicorn -c shop/gunicorn_conf.py shop.wsgi:app``.

Settings come from the environment (see shop/config.py).
"""

from __future__ import annotations

from . import create_app
from .logs import configure_logging

configure_logging()
app = create_app()
