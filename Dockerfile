# syntax=docker/dockerfile:1
# The autoscaler's image (also runs the walkthrough's sample worker, examples/hello_keda_worker.py).
#   docker build -t eventscaler:0.1.0 .
# Both stages use the same base image: the venv built in the first one refers to its Python by path.

# --- builder: the runtime dependencies, in a venv ------------------------------------------------
FROM python:3.11-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements.txt

# --- final: the venv and the code, no build tools, not root --------------------------------------
FROM python:3.11-slim

# A named user for the fixed UID/GID the manifests run as (runAsUser/runAsGroup 10001).
RUN groupadd --system --gid 10001 eventscaler \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin eventscaler

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /app
COPY --from=builder /opt/venv /opt/venv
COPY autoscaler.py config.example.yaml /app/
COPY eventscaler/ /app/eventscaler/
COPY examples/ /app/examples/
# Compile once at build time: the root filesystem is read-only at run time, and with
# PYTHONDONTWRITEBYTECODE nothing would be cached there anyway.
RUN python -m compileall -q /app

USER 10001:10001
# Health endpoints (/healthz, /readyz); AUTOSCALER_HEALTH_HOST=0.0.0.0 makes them reachable.
EXPOSE 8080
ENTRYPOINT ["python", "/app/autoscaler.py"]
CMD ["run"]
