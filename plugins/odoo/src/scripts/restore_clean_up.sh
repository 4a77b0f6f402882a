# Removes what a successful restore kept aside on Odoo's data volume: the previous filestore and
# the extracted dump. Run as `sh -c "$script" sh PREVIOUS_FILESTORE WORK_DIR`.
rm -rf "$1" "$2"
echo removed
