#!/usr/bin/env bash
# Build a working .venv for zalo-music on a fresh Debian machine (idempotent: a rerun is a no-op).
#   1. Debian packages: ffmpeg (audiocraft's audio_write pipes every format through the ffmpeg binary);
#      with ZALO_MUSIC_BROWSER=1 also chromium + chromium-driver (browser tests).
#   2. .venv with the pinned stack from pyproject.toml (the one place pins live) + zalo-music, editable.
#   3. audiocraft 1.3.0 from its official PyPI release sdist, verified by sha256 and installed --no-deps:
#      the sdist carries audiocraft's config/ tree (the wheel does not), and its declared pins
#      (av==11.0.0, torch==2.1.0, ...) cannot install on Python 3.11.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ZALO_MUSIC_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3.11}"
AUDIOCRAFT_VERSION=1.3.0
AUDIOCRAFT_SDIST_SHA256=d82ade3eb4f934ee1adb438ae687a2bf59d33ca4a20039beab072548c038ac80

stamp_key="$(cat "$ROOT/pyproject.toml" "$ROOT/scripts/setup.sh" | sha256sum | cut -c1-16)"
STAMP="$VENV/.zalo-music-setup-$stamp_key"

need_apt=()
command -v ffmpeg >/dev/null 2>&1 || need_apt+=(ffmpeg)
if [[ "${ZALO_MUSIC_BROWSER:-0}" == "1" ]]; then
  command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
fi
if ((${#need_apt[@]})); then
  echo "setup: installing Debian packages: ${need_apt[*]}"
  SUDO=""; [[ "$(id -u)" == 0 ]] || SUDO="sudo"
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: error: ${need_apt[*]} missing and apt-get not available; install them with your package manager" >&2
    exit 1
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [[ -f "$STAMP" ]]; then
  echo "setup: $VENV is up to date"
  exit 0
fi

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  PYTHON=python3
fi
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 required, got {sys.version}"' || {
  echo "setup: error: zalo-music needs Python 3.11 (set PYTHON=/path/to/python3.11)" >&2; exit 1; }

echo "setup: building $VENV (first time: ~4 min, ~8 GB: torch carries CUDA libraries)"
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q -U pip "setuptools>=68" wheel

src="$VENV/src"
mkdir -p "$src"
sdist="$src/audiocraft-$AUDIOCRAFT_VERSION.tar.gz"
if [[ ! -f "$sdist" ]] || ! echo "$AUDIOCRAFT_SDIST_SHA256  $sdist" | sha256sum -c --quiet - 2>/dev/null; then
  rm -f "$sdist"
  "${PIP[@]}" download -q --no-deps --no-binary :all: "audiocraft==$AUDIOCRAFT_VERSION" -d "$src"
fi
echo "$AUDIOCRAFT_SDIST_SHA256  $sdist" | sha256sum -c --quiet - || {
  echo "setup: error: $sdist does not match the audiocraft $AUDIOCRAFT_VERSION release checksum" >&2; exit 1; }
if [[ ! -f "$src/audiocraft-$AUDIOCRAFT_VERSION/config/config.yaml" ]]; then
  tar -xzf "$sdist" -C "$src"
fi

# The pinned stack and zalo-music itself (editable: config/ and grids/ are read from this checkout).
"${PIP[@]}" install -q -e "$ROOT[dev]"
"${PIP[@]}" install -q --no-deps -e "$src/audiocraft-$AUDIOCRAFT_VERSION"

"$VENV/bin/python" -c "import zalo_music; zalo_music.prepare(); import audiocraft; print('setup: audiocraft', audiocraft.__version__, 'ok')"
rm -f "$VENV"/.zalo-music-setup-*
touch "$STAMP"
echo "setup: done -> $VENV (activate with: source $VENV/bin/activate; check with: zalo-music doctor)"
