# facerecon service. CPU image by default; GPU image with --build-arg VARIANT=gpu.
#   docker build -t facerecon .                        # CPU, onnxruntime
#   docker build -t facerecon:gpu --build-arg VARIANT=gpu .   # onnxruntime-gpu with CUDA 13 + cuDNN 9 wheels
ARG VARIANT=cpu
ARG CPU_BASE=python:3.11-slim-bookworm
# CUDA and cuDNN come as pip wheels with onnxruntime-gpu (the `gpu` extra); the host's NVIDIA container
# toolkit mounts the driver. So the GPU image needs no CUDA base image, only the same Python.
ARG GPU_BASE=python:3.11-slim-bookworm

# ---- build: wheels for the service's dependencies (no torch: the service never imports training)
FROM python:3.11-slim-bookworm AS build
ARG VARIANT
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY training/__init__.py ./training/__init__.py
RUN extra=$([ "$VARIANT" = "gpu" ] && echo gpu || echo serve) \
 && pip wheel --no-cache-dir --wheel-dir /wheels ".[$extra]"

# ---- viewer: three.js for the page at GET /, exactly as service/viewer/package-lock.json pins it
FROM node:20-bookworm-slim AS viewer
WORKDIR /viewer
COPY service/viewer/package.json service/viewer/package-lock.json ./
RUN npm ci --no-audit --no-fund

# ---- runtime bases
FROM ${CPU_BASE} AS runtime-cpu
FROM ${GPU_BASE} AS runtime-gpu
ENV NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
ENV FACERECON_PROVIDERS='["CUDAExecutionProvider","CPUExecutionProvider"]'
# A second geometry row per face costs a GPU next to nothing: average with the mirror image (lower NME).
ENV FACERECON_MIRROR_AVERAGE=true
# The newest store's graphs are int8, made for CPU workers; a GPU runs them in float32, weights dequantized
# at start-up (also the default with CUDA first; docs/service.md#int8-graphs-issue-25).
ENV FACERECON_FLOAT_GRAPHS=true

FROM runtime-${VARIANT} AS runtime
RUN useradd --create-home --uid 10001 facerecon
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
WORKDIR /app
# service/ includes assets/yunet: the face detector the service needs at run time, with its MIT licence.
COPY --chown=facerecon service ./service
# Only what the page imports (the three.js build and its example modules), at the path the app serves.
COPY --from=viewer --chown=facerecon /viewer/node_modules/three/package.json /viewer/node_modules/three/LICENSE \
     ./service/viewer/node_modules/three/
COPY --from=viewer --chown=facerecon /viewer/node_modules/three/build ./service/viewer/node_modules/three/build
COPY --from=viewer --chown=facerecon /viewer/node_modules/three/examples/jsm \
     ./service/viewer/node_modules/three/examples/jsm
COPY --from=viewer --chown=facerecon /viewer/node_modules/swagger-ui-dist \
     ./service/viewer/node_modules/swagger-ui-dist
COPY --chown=facerecon model_store ./model_store
RUN mkdir -p /app/var && chown facerecon /app/var  # the async job store (FACERECON_JOB_STORE)
USER facerecon
ENV FACERECON_MODEL_STORE=/app/model_store FACERECON_JOB_STORE=/app/var/jobs.db FACERECON_HOST=0.0.0.0 FACERECON_PORT=8000
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=2).status != 200)"
CMD ["python", "-m", "service"]
