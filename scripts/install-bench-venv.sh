#!/usr/bin/env bash
# Create or refresh .venv-bench: datatrove and what its cleaning pipeline needs, for
# benchmarks/clean_bench.py to race against. Idempotent. Kept apart from .venv so that datatrove's
# dependencies never leak into the toolkit's environment or its bundle.
#
# Nothing is fetched at run time: datatrove's English word and sentence splitting is spaCy's blank
# "en" pipeline plus its rule-based sentencizer, which ship inside the spacy wheel (no model, no
# nltk data); the smoke test at the end proves it with the network cut off when it can.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv-bench}
# The processing extra brings ftfy, regex and xxhash; spacy is datatrove's English tokenizer;
# orjson is what its JSONL reader parses with.
PINS=(
  "datatrove[processing]==0.10.1"
  "spacy==3.8.18"
  "orjson==3.13.0"
  "ftfy==6.3.1"
  "xxhash==3.8.2"
  "numpy==2.4.6"
)

if ! command -v "$PYTHON" >/dev/null; then
  echo "error: $PYTHON not found; install Python 3.11 or set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
"$VENV/bin/python" -m pip install --quiet "${PINS[@]}"

venv_python=$(cd "$VENV" && pwd)/bin/python
smoke_dir=$(mktemp -d)
trap 'rm -rf "$smoke_dir"' EXIT
cat > "$smoke_dir/smoke.py" <<'PY'
# Every step the bench runs; building one checks its optional dependencies are installed.
from datatrove.data import Document
from datatrove.pipeline.dedup.minhash import (
    MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature,
)
from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter, GopherRepetitionFilter
from datatrove.pipeline.formatters import FTFYFormatter, PIIFormatter
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter

JsonlReader("."), JsonlWriter(".", compression=None), FTFYFormatter(), PIIFormatter()
MinhashDedupSignature("."), MinhashDedupBuckets(".", "."), MinhashDedupCluster(".", ".")
MinhashDedupFilter(".")
text = "The printer on floor two jams every morning. It started last week. Please help us fix it."
GopherRepetitionFilter().filter(Document(text=text, id="0"))
GopherQualityFilter(min_doc_words=5).filter(Document(text=text, id="0"))
C4QualityFilter(min_num_sentences=1).filter(Document(text=text, id="0"))
PY
# Without root (or user namespaces) the smoke test runs with the network up.
cut=()
unshare -n true 2>/dev/null && cut=(unshare -n)
(cd "$smoke_dir" && "${cut[@]}" "$venv_python" smoke.py)
version=$("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("datatrove"))')
echo "installed: datatrove $version in $VENV"
