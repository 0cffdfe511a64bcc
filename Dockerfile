# One image for the aggregator, the example gateway and the demo traffic generator
# (docker-compose.yml runs it three ways). Build from the project root: docker build -t gatewayz-metrics .
# tests/deploy/test_image.py builds it as Docker would (the context filtered by .dockerignore,
# only what is copied here, this pip install in a fresh environment) and starts every compose
# service of it from that tree: a package an entry point imports and this file does not copy
# fails that test by name. It simulates RUN pip install and useradd only: another RUN needs it
# taught (tests/deploy/imagebuild.py).
FROM python:3.11-slim

# No .pyc files written at run time (pip byte-compiles what it installs, at build time), logs
# unbuffered (they go to `docker compose logs`), no pip cache or version check in the layer.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The installable packages first, so editing examples/ or devtools/ does not reinstall the
# dependencies. hiredis, httptools and uvloop ship manylinux wheels for CPython 3.11: no compiler.
# README.md is read by the build (pyproject's `readme`).
COPY pyproject.toml README.md ./
COPY gatewayz_protocol/ gatewayz_protocol/
COPY gatewayz_transport/ gatewayz_transport/
COPY gatewayz_telemetry/ gatewayz_telemetry/
COPY client/ client/
COPY aggregator/ aggregator/
RUN pip install '.[aggregator,gateway]'

# Not installed (pyproject: they run from the checkout): the gateway is started as
# `examples.gateway.app:app` and the traffic as `python -m devtools.demo_traffic`, from /app.
COPY examples/ examples/
COPY devtools/ devtools/

# A non-root user with a home: Gunicorn (25.1+) puts its control socket under $HOME/.gunicorn.
RUN useradd --create-home --uid 10001 --user-group gatewayz
USER gatewayz

# 9108: the aggregator's /metrics; 8080: the example gateway (GATEWAY_BIND).
EXPOSE 9108 8080
CMD ["python", "-m", "aggregator", "--host", "0.0.0.0", "--port", "9108"]
