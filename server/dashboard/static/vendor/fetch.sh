#!/usr/bin/env bash
# Reproduce the vendored Plotly.js bundle from the npm registry, pinned and checked.
# The cartesian bundle has every trace the dashboard draws (scatter, heatmap, contour) at
# a third of the full bundle's size. Beamline networks have no internet, so the page
# serves this copy; run this script (with internet) only to update or verify it.
set -euo pipefail
PACKAGE=plotly.js-cartesian-dist-min
VERSION=4.1.1
FILE=plotly-cartesian.min.js
SHA256=79542150855a52c567260e3137095dbe2b744e6d702a5cabe67da246942fba7a

here="$(cd "$(dirname "$0")" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "$PACKAGE@$VERSION" >/dev/null && tar xzf ./*.tgz)
echo "$SHA256  $tmp/package/$FILE" | sha256sum --check --quiet
cp "$tmp/package/$FILE" "$here/$FILE"
cp "$tmp/package/LICENSE" "$here/LICENSE.plotly.txt"
echo "$PACKAGE@$VERSION -> $here/$FILE (sha256 ok)"
