#!/usr/bin/env bash
# Builds llama-cpp-python (source-only on PyPI) for a portable instruction-set baseline and installs it into .venv.
#
# Why: its default build is `-march=native` (GGML_NATIVE). On an Intel Xeon with AVX-512 and AMX that build dies with
# a general protection fault in libggml-cpu.so on any chat-length prompt, and a wheel cached on one machine is
# wrong for another. We pick an explicit, widely available baseline instead:
#   x86-64-v3  AVX, AVX2, FMA, F16C, BMI2, SSE4.2 (every x86-64 CPU since 2013-2015) when this CPU has them,
#   x86-64-v2  SSE4.2 only, for the older ones;
# no AVX-512, AVX-VNNI or AMX code is compiled at all. On other architectures, GGML_NATIVE=OFF and ggml's defaults.
# LLMAAS_LLAMA_CMAKE_ARGS replaces the baseline's flags (e.g. to opt into a faster, machine-specific build).
#
# pip's wheel cache keys on the version only, so a changed flag would silently reuse the old build: the wheel is
# kept in our own directory under pip's cache dir, keyed by a hash of everything that shapes the binary (version,
# flags, compiler, Python), and the key installed in .venv is recorded so a changed key really reinstalls.
# Usage: bash deploy/llama-cpp.sh [path/to/venv]                (prints the key it installed)
#        bash deploy/llama-cpp.sh --print-key [path/to/venv]    (prints only the key it would install; builds nothing)
set -euo pipefail
cd "$(dirname "$0")/.."

version=0.3.36
print_key=0
if [[ ${1:-} == --print-key ]]; then
  print_key=1
  shift
fi
venv=${1:-.venv}
py="$venv/bin/python"

baseline_flags() {
  local flags
  flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)
  case "$(uname -m)" in
    x86_64)
      local have_v3=1 f
      for f in avx avx2 fma f16c bmi2 sse4_2; do [[ " $flags " == *" $f "* ]] || have_v3=0; done
      local off="-DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF"
      off+=" -DGGML_AVX_VNNI=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
      if ((have_v3)); then
        echo "x86-64-v3 -DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON $off"
      else
        echo "x86-64-v2 -DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF -DGGML_BMI2=OFF $off"
      fi ;;
    *) echo "$(uname -m)-generic -DGGML_NATIVE=OFF" ;;
  esac
}

read -r baseline default_args <<<"$(baseline_flags)"
cmake_args=${LLMAAS_LLAMA_CMAKE_ARGS:-$default_args}
[[ -n ${LLMAAS_LLAMA_CMAKE_ARGS:-} ]] && baseline=custom
compiler=$( (${CC:-cc} --version 2>/dev/null || echo none) | head -1)
pyver=$("$py" -c 'import sys, sysconfig; print(sys.version.split()[0], sysconfig.get_platform())')
key=$(printf '%s\n' "llama-cpp-python==$version" "$cmake_args" "$compiler" "$pyver" | sha256sum | cut -c1-16)
if ((print_key)); then
  echo "$key"
  exit 0
fi

marker="$venv/.llama-cpp-build"
if [[ -f $marker && $(cat "$marker") == "$key" ]] && "$py" -c 'import importlib.metadata as m; m.version("llama-cpp-python")' 2>/dev/null; then
  echo "llama-cpp-python $version ($baseline, build $key) already installed"
  exit 0
fi

wheel_dir="$("$py" -m pip cache dir)/llmaas-llama-cpp/$key"
if ! compgen -G "$wheel_dir/llama_cpp_python-$version-*.whl" >/dev/null; then
  echo "building llama-cpp-python $version for $baseline (build $key; ~11 min on 2 cores, once per machine)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  CMAKE_ARGS="$cmake_args" CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
    "$py" -m pip wheel --quiet --no-cache-dir --no-deps --no-binary llama-cpp-python \
    "llama-cpp-python==$version" -w "$tmp"
  mkdir -p "$wheel_dir"
  printf 'CMAKE_ARGS=%s\ncompiler=%s\npython=%s\n' "$cmake_args" "$compiler" "$pyver" >"$tmp/build-settings.txt"
  mv "$tmp"/* "$wheel_dir"/
fi
"$py" -m pip install --quiet --no-deps --force-reinstall "$wheel_dir"/llama_cpp_python-$version-*.whl
echo "$key" >"$marker"
echo "llama-cpp-python $version installed ($baseline, build $key)"
