#!/usr/bin/env bash
# Run tests/server against the newest grpcio, grpcio-health-checking and grpcio-reflection on the
# package index, beside the pinned ones the main venv has (constraints/grpcio-pinned.txt).
#
# Fast: a second venv holds only those three packages and reaches everything else (pytest,
# grpcmesh itself, protobuf...) through the main venv's site-packages, added after its own so
# its newer grpc wins. pip's cache is reused. If the newest release is the pinned one, the
# server tests have already run against it and this says so instead of running them twice.
set -euo pipefail
cd "$(dirname "$0")/.."
MAIN=.venv
NEWEST=.venv-newest-grpcio

version() { "$1/bin/python" -c 'import grpc; print(grpc.__version__)'; }

test -x "$NEWEST/bin/python" || "$MAIN/bin/python" -m venv "$NEWEST"
main_site=$("$MAIN/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
new_site=$("$NEWEST/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# addsitedir (not a bare path) so the main venv's own .pth files (the editable grpcmesh) load too.
echo "import site; site.addsitedir('$main_site')" > "$new_site/zz_grpcmesh_main_venv.pth"
"$NEWEST/bin/python" -m pip install -q --disable-pip-version-check --upgrade \
    grpcio grpcio-health-checking grpcio-reflection 2>&1 | grep -v -e '^WARNING: Location' -e 'outside environment' -e "pip's dependency resolver" -e 'requires setuptools' || true

pinned=$(version "$MAIN")
newest=$(version "$NEWEST")
if [ "$pinned" = "$newest" ]; then
    echo "newest grpcio on the index is the pinned $pinned: tests/server already ran against it; not running them twice"
    exit 0
fi
echo "running tests/server against grpcio $newest (pinned: $pinned)"
"$NEWEST/bin/python" -m pytest -q -p no:cacheprovider tests/server "$@"
