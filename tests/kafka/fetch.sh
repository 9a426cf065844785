#!/usr/bin/env bash
# Fetch the Apache Kafka broker the test suite runs (tests/kafka_broker.py) as jars: kafka_2.13
# and its runtime dependencies, versions pinned in tests/kafka/pom.xml (the Kafka version
# docker-compose.yml pins), from Maven Central through Maven's local repository (~/.m2).
# Idempotent: a complete earlier fetch of the same pom is reused. Needs Java and Maven; without
# them it says which is missing and exits 0 (the real-Kafka tests then skip, or fail in CI).
#
#   tests/kafka/fetch.sh [DEST]   (default: <repo>/.bench/kafka; jars go to DEST/libs)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
dest="${1:-$repo/.bench/kafka}"
pom="$here/pom.xml"

for tool in java mvn; do
  if ! command -v "$tool" >/dev/null; then
    echo "tests/kafka/fetch.sh: $tool not found; the real-Kafka tests will skip (fail in CI)" >&2
    exit 0
  fi
done

# why: the stamp holds the pom's hash, so a version bump in the pom fetches again
want="$(sha256sum "$pom" | cut -d' ' -f1)"
if [ -f "$dest/libs/.fetched" ] && [ "$(cat "$dest/libs/.fetched")" = "$want" ]; then
  exit 0
fi

# why: fetched into a scratch folder and moved in whole, so an interrupted fetch never looks
# complete to the tests
mkdir -p "$dest"
scratch="$(mktemp -d "$dest/libs.partial.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
# why: captured, and shown only on failure: Debian's Maven 3.8 writes stray colour codes even
# with -q -B
if ! out="$(mvn -q -B -f "$pom" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$scratch" 2>&1)"; then
  printf '%s\n' "$out" >&2
  exit 1
fi
echo "$want" > "$scratch/.fetched"
rm -rf "$dest/libs"
mv "$scratch" "$dest/libs"
trap - EXIT
echo "$dest/libs"
