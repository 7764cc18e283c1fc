# The shop replica image: the same package the local launcher runs, installed
# with pip, served by gunicorn with the shop's own config (gthread workers).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Build from a scratch folder and delete it: at run time the code comes from
# site-packages only, exactly what `pip install .` put there.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sessionstore/ sessionstore/
COPY shop/ shop/
RUN pip install . \
    && rm -rf /src \
    && groupadd --system --gid 10001 shop \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin shop

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
