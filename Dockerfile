# mcp-authz service image: multi-stage, non-root, no compilers or build tools in the final stage.
#   docker build -t ghcr.io/mcp-authz/mcp-authz:0.1.0 .
# The Helm chart (helm/mcp-authz) refers to this image and tag by default.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/mcp-authz
# Stubs are generated from proto/ with grpcio-tools, which stays in this stage only.
RUN /opt/mcp-authz/bin/pip install "grpcio-tools>=1.70,<2"
COPY pyproject.toml README.md ./
COPY proto ./proto
COPY scripts ./scripts
COPY service ./service
RUN /opt/mcp-authz/bin/python scripts/gen_proto.py \
 && /opt/mcp-authz/bin/pip install . \
 && /opt/mcp-authz/bin/pip uninstall -y grpcio-tools setuptools wheel pip \
 && find /opt/mcp-authz -name '__pycache__' -prune -exec rm -rf {} + \
 && /opt/mcp-authz/bin/python -c "import mcp_authz._pb.mcp.authz.v1.authz_pb2"
COPY policies /app/policies

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="mcp-authz" \
      org.opencontainers.image.description="Authorization decisions for MCP requests" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 mcp-authz \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin mcp-authz
COPY --from=build /opt/mcp-authz /opt/mcp-authz
COPY --from=build /app/policies /app/policies
ENV PATH=/opt/mcp-authz/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /app
USER 10001:10001
EXPOSE 50051 9090
ENTRYPOINT ["mcp-authz"]
CMD ["serve", "--config", "/etc/mcp-authz/config/config.yaml"]
