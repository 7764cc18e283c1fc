# The shop replica image: the same package the local launcher runs, installed
# with pip, served by gunicorn with the shop's own config (gthread workers).
#
# PYTHON_IMAGE: any image with Python 3.11+ and its venv module. The official
# python:3.11-slim by default; the docker tests build one from Debian's packages
# (no registry is reachable there) whose pip settings point at a local wheel
# folder. Nothing below depends on which: only python3 on PATH is assumed.
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Build from a scratch folder and delete it: at run time the code comes from
# the virtualenv only, exactly what `pip install .` put there.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sessionstore/ sessionstore/
COPY shop/ shop/
# A virtualenv, not the image's own site-packages: the same layout on every
# base (a distribution's python3 refuses system-wide pip installs, PEP 668).
RUN python3 -m venv /opt/shop \
    && /opt/shop/bin/pip install . \
    && rm -rf /src \
    && groupadd --system --gid 10001 shop \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin shop
ENV PATH=/opt/shop/bin:$PATH

# Never run the web app as root (numeric, so the runtime needs no passwd lookup).
USER 10001:10001
WORKDIR /tmp

# gunicorn listens on every interface of the container, port 8000; nginx
# finds the replicas as shop:8000 through Docker's DNS.
ENV SHOP_BIND=0.0.0.0:8000
EXPOSE 8000

# Liveness only (/healthz): whether Redis answers is nginx's and /readyz's concern,
# and a Redis outage must not get every replica marked unhealthy at once.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]

# exec form: gunicorn is PID 1 and receives docker's SIGTERM itself, so it
# stops gracefully (in-flight requests finish).
CMD ["gunicorn", "--config", "python:shop.gunicorn_conf", "shop.wsgi:app"]
