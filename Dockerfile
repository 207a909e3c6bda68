# keywatch: the daemon (default command) and the simulated relay (`simulate`) in one image.
#   docker build -t keywatch:local .
#   docker run --rm -v "$PWD/keywatch.yaml:/etc/keywatch/keywatch.yaml:ro" -v keywatch-data:/var/lib/keywatch \
#              -p 127.0.0.1:9477:9477 keywatch:local
# The config must listen on 0.0.0.0:9477 inside the container and keep its database under
# /var/lib/keywatch (sqlite:////var/lib/keywatch/keywatch.db), or use PostgreSQL
# (postgresql+psycopg://...); see deploy/compose/keywatch.yaml and deploy/compose/keywatch.ha.yaml.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/keywatch
WORKDIR /src
COPY pyproject.toml README.md ./
COPY monitor ./monitor
COPY alerts ./alerts
# the postgres extra (psycopg 3 with its own libpq): the same image runs on SQLite or PostgreSQL
RUN /opt/keywatch/bin/pip install '.[postgres]' \
 && /opt/keywatch/bin/keywatch --version \
 && /opt/keywatch/bin/python -c "import psycopg; psycopg.pq.version()"

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/keywatch/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    KEYWATCH_CONFIG=/etc/keywatch/keywatch.yaml
RUN groupadd --system --gid 10001 keywatch \
 && useradd --system --uid 10001 --gid keywatch --home-dir /var/lib/keywatch --no-create-home \
            --shell /usr/sbin/nologin keywatch \
 && install -d -o keywatch -g keywatch -m 0750 /var/lib/keywatch \
 && install -d -m 0755 /etc/keywatch
COPY --from=build /opt/keywatch /opt/keywatch
# the database (SQLite) lives here; a named volume created on it inherits the keywatch owner
VOLUME ["/var/lib/keywatch"]
WORKDIR /var/lib/keywatch
USER 10001:10001
EXPOSE 9477
# no curl in the slim image: Python asks /healthz (urlopen raises, so exits non-zero, on any non-2xx)
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ.get('KEYWATCH_HEALTHCHECK_URL', 'http://127.0.0.1:9477/healthz'), timeout=4)"]
# exec form: keywatch is PID 1's only child under `init: true` (or PID 1 itself) and gets SIGTERM
ENTRYPOINT ["keywatch"]
CMD ["-c", "/etc/keywatch/keywatch.yaml", "run"]
