#!/bin/sh
# Berth's Odoo stand-in, at image build time (offline): a local Debian repository holding one tiny
# package, berth-standin-tool, and apt pointed at it alone — a stand-in for the Debian mirror a real
# server reaches, so `apt-get update && apt-get install -y berth-standin-tool` (as root) really works.
# The network sources are removed in this image only.
set -eu
repo=$1
work=$(mktemp -d)
mkdir -p "$work/pkg/DEBIAN" "$work/pkg/usr/bin" "$repo"
cat > "$work/pkg/DEBIAN/control" <<CONTROL
Package: berth-standin-tool
Version: 1.0
Architecture: all
Maintainer: Berth tests <tests@berth.invalid>
Description: Berth test stand-in package
 A tiny tool from the Odoo stand-in image's local repository, for offline apt tests.
CONTROL
printf '#!/bin/sh\necho berth-standin-tool\n' > "$work/pkg/usr/bin/berth-standin-tool"
chmod 755 "$work/pkg/usr/bin/berth-standin-tool"
dpkg-deb --build --root-owner-group "$work/pkg" "$repo/berth-standin-tool_1.0_all.deb" >/dev/null
(cd "$repo" && apt-ftparchive packages . > Packages && apt-ftparchive release . > Release)
rm -rf "$work" /etc/apt/sources.list /etc/apt/sources.list.d/*
echo "deb [trusted=yes] file:$repo ./" > /etc/apt/sources.list.d/berth-standin.list
