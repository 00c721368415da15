#!/usr/bin/env bash
# Installs the native libraries mumu links against (OpenBLAS, zstd, libpng, libjpeg-turbo) when pkg-config
# cannot find them. Safe to run repeatedly: it does nothing when everything is present.
set -euo pipefail
need=()
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
if command -v pkg-config >/dev/null 2>&1; then
  pkg-config --exists openblas || need+=(libopenblas-dev)
  pkg-config --exists libzstd  || need+=(libzstd-dev)
  pkg-config --exists libpng   || need+=(libpng-dev)
  pkg-config --exists libjpeg  || need+=(libjpeg62-turbo-dev)
else
  need+=(libopenblas-dev libzstd-dev libpng-dev libjpeg62-turbo-dev)
fi
if [ ${#need[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  echo "install-deps: installing ${need[*]}" >&2
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}" >/dev/null
fi
