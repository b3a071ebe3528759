#!/usr/bin/env bash
# Re-fetches the AsyncAPI viewer that GET /asyncapi serves, from the npm registry, into
# gateway/viewer/: the standalone bundle of @asyncapi/react-component and its stylesheet, with
# their licence notes. The files are committed, so the gateway serves them offline and with no
# build step; run this only to move to another version (then commit what it wrote). The
# tarball is checked against the integrity hash the registry publishes for that version.
set -euo pipefail
cd "$(dirname "$0")/.."

version=${1:-3.2.1}
package="@asyncapi/react-component@$version"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
want=$(npm view "$package" dist.integrity)
(cd "$work" && npm pack "$package" --silent >/dev/null)
tarball=$(ls "$work"/*.tgz)
got="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
if [ "$got" != "$want" ]; then
    echo "[viewer] $package: integrity $got, the registry says $want" >&2
    exit 1
fi
tar -xzf "$tarball" -C "$work"
dest=gateway/viewer
rm -f "$dest"/*
cp "$work/package/browser/standalone/index.js" "$dest/asyncapi-standalone.js"
cp "$work/package/browser/standalone/index.js.LICENSE.txt" "$dest/asyncapi-standalone.js.LICENSE.txt"
cp "$work/package/styles/default.min.css" "$dest/asyncapi.css"
cp "$work/package/LICENSE" "$dest/LICENSE"
echo "$package $want" > "$dest/VERSION"
echo "[viewer] $package into $dest" >&2
