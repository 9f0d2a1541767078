# syntax=docker/dockerfile:1
# crossfade operator image: `crossfade run` as a non-root user on a digest-pinned Python base.
#
# BASE_IMAGE must be pinned by digest. The default below is a placeholder that no registry
# serves, so a build fails loudly until the digest is filled in; docs/install.md shows how
# to look it up and pass it:
#   docker build --build-arg BASE_IMAGE=python:3.11-slim-bookworm@sha256:<digest> .
# Both stages use the same base, so the virtualenv built in the first one runs in the second.
ARG BASE_IMAGE=python:3.11-slim-bookworm@sha256:0000000000000000000000000000000000000000000000000000000000000000

FROM ${BASE_IMAGE} AS build
ARG UV_VERSION=0.13.9
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_NO_CACHE=1 \
    UV_COMPILE_BYTECODE=1
WORKDIR /src
RUN python -m venv /opt/uv \
 && /opt/uv/bin/pip install "uv==${UV_VERSION}" \
 && python -m venv --without-pip /opt/crossfade
COPY pyproject.toml requirements.lock README.md ./
# Runtime dependencies only (no test/lint extras), each at the version and hash of the lock.
RUN /opt/uv/bin/uv pip install --python /opt/crossfade/bin/python \
      --require-hashes --constraint requirements.lock --requirement pyproject.toml
COPY operator ./operator
RUN /opt/uv/bin/uv pip install --python /opt/crossfade/bin/python --no-deps . \
 && /opt/crossfade/bin/crossfade --help >/dev/null

FROM ${BASE_IMAGE} AS runtime
LABEL org.opencontainers.image.title="crossfade" \
      org.opencontainers.image.description="Keeps LLM inference serving when one cloud falters" \
      org.opencontainers.image.licenses="Apache-2.0"
# No installer in the final image: the app's virtualenv has no pip, and the base's goes too.
RUN python -m pip uninstall --yes pip setuptools wheel \
 && groupadd --system --gid 65532 crossfade \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin crossfade
COPY --from=build /opt/crossfade /opt/crossfade
ENV PATH=/opt/crossfade/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
EXPOSE 8080
# Kubernetes uses the chart's probes; this serves `docker run` users.
HEALTHCHECK --interval=30s --timeout=5s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=3)"]
ENTRYPOINT ["crossfade", "run"]
