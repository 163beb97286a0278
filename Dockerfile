# akua-crawler as a container: docker build -t akua-crawler:0.1.0 .
# The base is pinned to an exact Python and Debian release. For byte-for-byte rebuilds, append
# the digest your registry serves for it (docker buildx imagetools inspect python:3.11.11-slim-bookworm)
# as BASE=python:3.11.11-slim-bookworm@sha256:... with --build-arg.
ARG BASE=python:3.11.11-slim-bookworm
FROM ${BASE} AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE MANIFEST.in ./
COPY crawler ./crawler
RUN python -m venv /opt/akua-crawler \
 && /opt/akua-crawler/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/akua-crawler/bin/pip install --no-cache-dir '.[kcl]'

FROM ${BASE}
COPY --from=build /opt/akua-crawler /opt/akua-crawler
RUN groupadd --system --gid 10001 akua \
 && useradd --system --uid 10001 --gid akua --home-dir /var/lib/akua-crawler --shell /usr/sbin/nologin akua \
 && install -d -o akua -g akua -m 0700 /var/lib/akua-crawler
ENV PATH=/opt/akua-crawler/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    STATE_DIRECTORY=/var/lib/akua-crawler
USER 10001:10001
VOLUME ["/var/lib/akua-crawler"]
ENTRYPOINT ["akua-crawler"]
CMD ["run"]
