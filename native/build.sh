#!/usr/bin/env bash
# Rebuilds src/Cobra.AI/runtimes/linux-x64/native/libcobra_kernels.so from cobra_kernels.c (a developer step:
# the library is committed, so building and testing Cobra.AI needs no C compiler). Needs gcc >= 11 (x86-64).
# The library has no dependencies (-nostdlib: no libc, no libgcc) and only its exported kernels; it writes
# the source's SHA-256 beside it, which a test holds the committed source to (a changed source not rebuilt fails).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/../src/Cobra.AI/runtimes/linux-x64/native"
mkdir -p "$out"
gcc -O3 -std=c11 -fPIC -shared -nostdlib -fno-builtin -fvisibility=hidden -fno-asynchronous-unwind-tables \
    -ffile-prefix-map="$here"=. -Wall -Wextra -Werror \
    -Wl,--build-id=none -Wl,-z,noexecstack -Wl,-z,now -s \
    -o "$out/libcobra_kernels.so" "$here/cobra_kernels.c"
if readelf -d "$out/libcobra_kernels.so" | grep -q NEEDED; then
  echo "libcobra_kernels.so must not depend on other libraries" >&2; exit 1
fi
sha256sum "$here/cobra_kernels.c" | cut -d' ' -f1 > "$out/libcobra_kernels.so.source-sha256"
echo "built $out/libcobra_kernels.so ($(stat -c %s "$out/libcobra_kernels.so") bytes): $(nm -D --defined-only "$out/libcobra_kernels.so" | awk '{print $3}' | tr '\n' ' ')"
