# syntax=docker/dockerfile:1
#
# Cohort for NVIDIA GPU workers: `cohort` with @tensorflow/tfjs-node-gpu on CUDA 11.2 + cuDNN 8.
# Build from the repository root (the build context must be the repository):
#
#   docker build -f deploy/docker/gpu.Dockerfile -t cohort-gpu:0.1.0 .
#   docker run --rm --gpus all cohort-gpu:0.1.0 worker --connect tcp://HOST:5555 --member a --gpu 0 --keys /keys
#
# Why these versions (deploy/docker/README.md): @tensorflow/tfjs-node-gpu 4.22.0 downloads and
# wraps libtensorflow 2.9.1 (LIBTENSORFLOW_VERSION in its scripts/deps-constants.js), and
# TensorFlow 2.9 is built and tested against CUDA 11.2 and cuDNN 8.1. The nvidia/cuda
# 11.2.2-cudnn8 images carry CUDA 11.2 and cuDNN 8.1.1 (runtime libraries only; the driver
# comes from the host through the NVIDIA container toolkit, R460 or newer).
# Building needs the internet: npm packages, and libtensorflow plus the tfjs binding, which
# tfjs-node-gpu's install script fetches (TFJS_NODE_CDN_STORAGE / TFJS_NODE_BASE_URI point it at
# a mirror).

ARG CUDA_IMAGE=nvidia/cuda:11.2.2-cudnn8-runtime-ubuntu20.04
ARG NODE_IMAGE=node:20-bookworm-slim

# Node.js 20 comes from the official image: its binaries need glibc >= 2.28 (Ubuntu 20.04 has 2.31).
FROM ${NODE_IMAGE} AS node

FROM ${CUDA_IMAGE} AS build
COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=node /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/npm
RUN ln -s /usr/local/lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm
# A C++ toolchain in case the prebuilt tfjs binding cannot be fetched and node-gyp builds it.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
ARG TFJS_NODE_CDN_STORAGE=
ARG TFJS_NODE_BASE_URI=
COPY package.json package-lock.json tsconfig.json ./
COPY cli.ts index.ts ./
COPY coordinator ./coordinator
COPY worker ./worker
COPY shared ./shared
COPY report ./report
# Optional dependencies included: npm skips an optional package whose install fails, so check
# that tfjs-node-gpu really got libtensorflow 2.9.1 and its binding. `npm ci` builds dist/
# (the prepare script); the dev dependencies are dropped afterwards.
RUN npm ci --include=optional --no-audit --no-fund \
 && test -f node_modules/@tensorflow/tfjs-node-gpu/deps/lib/libtensorflow.so.2.9.1 \
 && ls node_modules/@tensorflow/tfjs-node-gpu/lib/napi-v*/tfjs_binding.node \
 && test -f dist/cli.js \
 && npm prune --omit=dev --no-audit --no-fund
COPY examples/*.yaml ./examples/

FROM ${CUDA_IMAGE}
# tini as PID 1: signals reach cohort (it stops its workers) and zombies are reaped.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates tini \
 && rm -rf /var/lib/apt/lists/*
COPY --from=node /usr/local/bin/node /usr/local/bin/node
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
