# One image, two processes: `syncgate gateway` (the default) and `syncgate consumer`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# .dockerignore keeps the venv, tests, var/ and any .env out of this copy.
COPY . /src
RUN pip install /src && rm -rf /src

# A fixed uid, so files in the volumes keep one owner across image rebuilds. /data and /runs
# (the run store the consumer writes and the gateway reads) are made here, owned by that
# user, so a fresh named volume mounted on either is writable.
RUN useradd --system --uid 10001 --no-create-home --home-dir /data syncgate \
    && mkdir /data /runs && chown syncgate:syncgate /data /runs
USER syncgate
WORKDIR /data

# Inside a container the gateway must listen on every interface, not just loopback.
ENV SYNCGATE_HOST=0.0.0.0 \
    SYNCGATE_PORT=8080
EXPOSE 8080

# /readyz is 200 only while the broker link is up. The slim image has no curl; urlopen
# raises on a 503 or a refused connection, which exits non-zero.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('SYNCGATE_PORT', '8080') + '/readyz', timeout=2)"]

ENTRYPOINT ["syncgate"]
CMD ["gateway"]
