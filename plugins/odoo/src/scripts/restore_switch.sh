# Swaps a filestore folder for another, in a one-off container on Odoo's data volume while Odoo is
# stopped: CURRENT moves to OUTGOING (replacing it) and INCOMING takes CURRENT's place. A missing
# CURRENT is no error (a database that never had an attachment); a missing INCOMING is, and is
# found before anything moves. Run as `sh -c "$script" sh CURRENT INCOMING OUTGOING`: the names
# are positional arguments, never interpolated into the script.
set -e
current="$1"
incoming="$2"
outgoing="$3"
[ -d "$incoming" ] || { echo "$incoming is missing"; exit 1; }
rm -rf "$outgoing"
if [ -e "$current" ]; then mv "$current" "$outgoing"; fi
mv "$incoming" "$current"
echo switched
