# syntax=docker/dockerfile:1
#
# Cohort for GPU workers on WebGPU, without CUDA: `cohort` with @tensorflow/tfjs-backend-webgpu
# on Dawn (the npm `webgpu` package, which ships dawn.node) over Vulkan. Build from the
# repository root (the build context must be the repository):
#
#   docker build -f deploy/docker/webgpu.Dockerfile -t cohort-webgpu:0.1.0 .
#   docker run --rm --gpus all cohort-webgpu:0.1.0 worker --connect tcp://HOST:5555 --member a --backend webgpu --gpu 0 --keys /keys
#
# What is in it (deploy/docker/README.md): Node.js 20 and the Vulkan loader (libvulkan1), nothing
# of CUDA. The GPU driver's Vulkan files (its ICD json and libGLX_nvidia.so.0) come from the
# host: the NVIDIA container toolkit mounts them when NVIDIA_DRIVER_CAPABILITIES includes
# `graphics`, which the image sets; AMD and Intel drivers bring their own ICD (mount it, or set
# VK_DRIVER_FILES). Any recent driver with Vulkan will do, on CUDA 11, 12 or 13 hosts alike.
# Building needs nothing but the npm registry (or its mirror): webgpu and tfjs-backend-webgpu are
# regular dependencies, and no install script runs, so no libtensorflow is downloaded.
# Backends in the image: webgpu, wasm and cpu. There `auto` is webgpu when a hardware adapter
# exists and wasm otherwise, so deployments pass `--backend webgpu`: a container without the
# driver's Vulkan files then stops with one line saying why instead of training on the CPU.

ARG NODE_IMAGE=node:20-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
COPY cli.ts index.ts ./
COPY coordinator ./coordinator
COPY worker ./worker
COPY shared ./shared
COPY report ./report
# Install scripts off: nothing is downloaded besides the npm packages (webgpu's own script only
# touches macOS), and the other native packages (zeromq, sharp, msgpackr) ship prebuilt binaries.
# Optional dependencies included, because sharp's and msgpackr's binaries are optional packages;
# tfjs-node and tfjs-node-gpu, which would need libtensorflow, are removed afterwards. The build
# stops unless Dawn's binding for this platform is there and loads; the other platforms' bindings
# (about 110 MB) are dropped.
RUN npm ci --include=optional --ignore-scripts --no-audit --no-fund \
 && test -f "node_modules/webgpu/dist/linux-$(node -p process.arch)/dawn.node" \
 && node -e "import('webgpu').then((m) => { if (typeof m.create !== 'function') process.exit(1); })" \
 && npm run build \
 && test -f dist/cli.js \
 && npm prune --omit=dev --no-audit --no-fund \
 && rm -rf node_modules/@tensorflow/tfjs-node-gpu node_modules/@tensorflow/tfjs-node \
 && find node_modules/webgpu/dist -mindepth 1 -maxdepth 1 ! -name "linux-$(node -p process.arch)" -exec rm -rf {} +
COPY examples/*.yaml ./examples/

FROM ${NODE_IMAGE}
# tini as PID 1: signals reach cohort (it stops its workers) and zombies are reaped.
# libvulkan1: the Vulkan loader, which Dawn opens. libglvnd0, libx11-6 and libxext6: what the
# NVIDIA driver's Vulkan library (libGLX_nvidia.so.0, mounted from the host) links against
# (glvnd's libGLdispatch, libX11, libXext), as NVIDIA's own glvnd images install them.
# vulkan-tools: `vulkaninfo --summary`, to see which GPUs the container's Vulkan finds.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends tini libvulkan1 libglvnd0 libx11-6 libxext6 vulkan-tools \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 10001 cohort \
 && useradd --uid 10001 --gid cohort --create-home --shell /usr/sbin/nologin cohort
COPY --from=build /app /app
# `cohort` is the package's bin (dist/cli.js).
RUN chmod 0755 /app/dist/cli.js && ln -s /app/dist/cli.js /usr/local/bin/cohort
# The NVIDIA container toolkit mounts the driver's Vulkan ICD only for the `graphics` capability
# (compute and utility: as in the nvidia/cuda images, nvidia-smi among them). All GPUs by default,
# as in the nvidia/cuda images: `docker run --gpus`, a Kubernetes GPU request or Slurm narrow it.
# LD_LIBRARY_PATH as in the nvidia/cuda images, for hosts that mount the driver under
# /usr/local/nvidia (its ICD json is then at /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json:
# set VK_DRIVER_FILES to it when Vulkan finds no GPU).
ENV NODE_ENV=production \
    COHORT_CACHE_DIR=/home/cohort/.cache/cohort \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics \
    NVIDIA_VISIBLE_DEVICES=all \
    LD_LIBRARY_PATH=/usr/local/nvidia/lib:/usr/local/nvidia/lib64
USER 10001:10001
WORKDIR /home/cohort
ENTRYPOINT ["/usr/bin/tini", "--", "cohort"]
CMD ["--help"]
