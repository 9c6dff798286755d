# shellcheck shell=bash
# Sourced by scripts/run and scripts/test: installs the Debian packages the build needs, if any
# is missing. cmake + nasm build libjpeg-turbo (turbojpeg) and libheif (embedded-libheif);
# libheif links Debian's libde265 (HEIC) and libdav1d (AVIF) decoders and the libaom AV1
# encoder (AVIF output) when their -dev packages are present at build time. libavif-bin:
# avifdec, the independent AVIF decoder tests/pipeline.rs checks AVIF outputs with.
# (lcms2 is built from the crate's bundled source: no liblcms2-dev.) libjemalloc-dev: the test
# and `local` builds link Debian's jemalloc 5.3.0 (the version tikv-jemalloc-sys bundles)
# instead of running jemalloc's configure + make, one of the longest steps of a cold build;
# release builds (benchmarks, the container) still build the bundled one. A plain `cargo` run
# without JEMALLOC_OVERRIDE builds the bundled one too (and rebuilds it when the variable changes).
resizeq_install_build_deps() {
  resizeq_apt_install cmake nasm pkg-config g++ libde265-dev libdav1d-dev libaom-dev libavif-bin \
    libjemalloc-dev
  local jemalloc
  jemalloc="/usr/lib/$(gcc -print-multiarch)/libjemalloc_pic.a"
  if [[ -f "$jemalloc" ]]; then
    export JEMALLOC_OVERRIDE="$jemalloc"
  fi
}

# The test suite's own packages: chromium for the browser upload test (tests/it/presign.rs, driven
# through Playwright's Python client from scripts/browser.sh).
resizeq_install_test_deps() {
  resizeq_apt_install chromium
}

# Installs those of the named packages that are missing (apt-get update only then).
resizeq_apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  local sudo_cmd=()
  [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
  printf '==> installing apt packages: %s\n' "${missing[*]}"
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
