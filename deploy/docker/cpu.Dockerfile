# syntax=docker/dockerfile:1
#
# Cohort on CPUs: the coordinator, and workers without a GPU. Build from the repository root:
#
#   docker build -f deploy/docker/cpu.Dockerfile -t cohort-cpu:0.1.0 .
#   docker run --rm -v "$PWD/runs:/home/cohort/runs" cohort-cpu:0.1.0 train /app/examples/dml-fashion-mnist.yaml
#
# Backends: the embedded wasm backend always; with TFJS_NODE=true (the default) also
# @tensorflow/tfjs-node (libtensorflow 2.9.1 on the CPU), which its install script downloads.
# --build-arg TFJS_NODE=false builds from the npm registry alone (wasm only). tfjs-node-gpu's
# install script, which would download the GPU libtensorflow, never runs here.

ARG NODE_IMAGE=node:20-bookworm-slim

FROM ${NODE_IMAGE} AS build
# A C++ toolchain in case the prebuilt tfjs binding cannot be fetched and node-gyp builds it.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
ARG TFJS_NODE=true
ARG TFJS_NODE_CDN_STORAGE=
ARG TFJS_NODE_BASE_URI=
COPY package.json package-lock.json tsconfig.json ./
COPY cli.ts index.ts ./
COPY coordinator ./coordinator
COPY worker ./worker
COPY shared ./shared
COPY report ./report
# Install scripts off (no download of either libtensorflow), then tfjs-node's alone when wanted;
# the other native packages (zeromq, sharp, msgpackr) ship prebuilt binaries.
RUN npm ci --include=optional --ignore-scripts --no-audit --no-fund \
 && if [ "$TFJS_NODE" = "true" ]; then \
      npm rebuild @tensorflow/tfjs-node \
      && test -f node_modules/@tensorflow/tfjs-node/deps/lib/libtensorflow.so.2.9.1; \
    fi \
 && npm run build \
 && test -f dist/cli.js \
 && npm prune --omit=dev --no-audit --no-fund \
 && rm -rf node_modules/@tensorflow/tfjs-node-gpu \
 && if [ "$TFJS_NODE" != "true" ]; then rm -rf node_modules/@tensorflow/tfjs-node; fi
COPY examples/*.yaml ./examples/

FROM ${NODE_IMAGE}
# tini as PID 1: signals reach cohort (it stops its workers) and zombies are reaped.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 10001 cohort \
 && useradd --uid 10001 --gid cohort --create-home --shell /usr/sbin/nologin cohort
COPY --from=build /app /app
# `cohort` is the package's bin (dist/cli.js).
RUN chmod 0755 /app/dist/cli.js && ln -s /app/dist/cli.js /usr/local/bin/cohort
ENV NODE_ENV=production \
    COHORT_CACHE_DIR=/home/cohort/.cache/cohort
USER 10001:10001
WORKDIR /home/cohort
ENTRYPOINT ["/usr/bin/tini", "--", "cohort"]
CMD ["--help"]
