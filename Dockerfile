# syntax=docker/dockerfile:1
# The API image: `docker build -t inmail .`, then run it against a MongoDB replica set with
# INMAIL_MONGODB_URI and INMAIL_JWT_SECRET set (docker-compose.yml does both).

# Build stage: a virtual environment holding the service and its production dependencies only
# (no dev tools, no embedded mongod: production connects to INMAIL_MONGODB_URI).
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/inmail
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/inmail/bin/pip install .

# Runtime stage: the same slim base, the virtual environment, and an unprivileged user.
FROM python:3.11-slim AS runtime
RUN groupadd --system --gid 10001 inmail \
 && useradd --system --uid 10001 --gid inmail --create-home --home-dir /home/inmail \
    --shell /usr/sbin/nologin inmail
COPY --from=build /opt/inmail /opt/inmail
ENV PATH=/opt/inmail/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    INMAIL_ENV=production \
    INMAIL_HOST=0.0.0.0 \
    INMAIL_PORT=8000 \
    INMAIL_LOG_FORMAT=json \
    INMAIL_DATA_DIR=/home/inmail/data
USER 10001:10001
WORKDIR /home/inmail
EXPOSE 8000
# The slim image has no curl: ask Python. /readyz answers 200 once MongoDB answers a ping.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]
# uvicorn drains requests for up to 10 s on SIGTERM (give `docker stop` more than that).
STOPSIGNAL SIGTERM
CMD ["inmail", "serve"]
