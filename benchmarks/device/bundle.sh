#!/usr/bin/env bash
# Fill .whl/ and .redis/ (both git-ignored) for benchmarks/device/check.sh: the Python
# packages a lent GPU machine's image lacks, as Python 3.12 wheels at the versions of this
# checkout's .venv, and this machine's redis-server with the libraries it links (not glibc).
# Run here, in the repository, once per checkout; it needs the package registry.
set -euo pipefail
cd "$(dirname "$0")/../.."
PIP=${PIP:-.venv/bin/pip}
exclude=.git/info/exclude
[ -d .git ] || exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
for p in /.whl/ /.redis/; do grep -qxF "$p" "$exclude" 2>/dev/null || echo "$p" >>"$exclude"; done

# what the worker, gpu_check.py and inference.py import that the image does not hold
# (its package list: .library/device/KINDS.md); typing-extensions: pydantic needs a newer one
pkgs=(annotated-types pydantic pydantic-core redis typing-extensions typing-inspection websockets)
pins=()
for p in "${pkgs[@]}"; do
    v=$("$PIP" show "$p" 2>/dev/null | sed -n 's/^Version: //p')
    [ -n "$v" ] || { echo "$p is not installed in the venv" >&2; exit 1; }
    pins+=("$p==$v")
done
rm -rf .whl && mkdir .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${pins[@]}"

server=$(command -v redis-server)
rm -rf .redis && mkdir -p .redis/bin .redis/lib
cp "$server" .redis/bin/
ldd "$server" | awk '/=> \//{print $3}' | grep -vE '/(libc|libm|ld-linux[^/]*)\.so' \
    | xargs -r cp -L -t .redis/lib/
LD_LIBRARY_PATH=.redis/lib .redis/bin/redis-server --version
ls .whl; du -sh .whl .redis
