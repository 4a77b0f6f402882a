"""Extract a backup for a restore, in a one-off container of the environment's own Odoo image.

Usage: restore_extract.py SOURCE WORK DEST ODOO_MAJOR CLIENT_MAJOR (the restore passes the script
itself with `python3 -c`). SOURCE is the downloaded backup (read-only), WORK the folder that
receives the dump (`dump.sql`, or `dump.dump` in PostgreSQL's custom format), DEST the folder that
receives the filestore; ODOO_MAJOR is the environment's Odoo major version, CLIENT_MAJOR its
PostgreSQL client's (`pg_restore`).

Python's zipfile reads every zip Odoo and Odoo.sh write. Every member's CRC and the layout are
checked before anything is written. A dump is plain SQL or PostgreSQL's custom format (`PGDMP`),
whether it is a zip's `dump.sql` or the whole file; a dump with no filestore (bare, or a zip
without `filestore/`) leaves DEST empty. Refused: a backup of a newer Odoo major version, and a dump
written by a newer `pg_dump` than the client, which cannot read its format or its SQL. The dump's
header says which `pg_dump` wrote it (else the manifest's `pg_dump_version` or `pg_version`);
`pg_dump` never dumps a server newer than itself, so this also covers the server.

Prints one line of JSON: {"format", "filestore", "files", "bytes", "manifest"}, or {"refused"}
with exit status 2.
"""
import json, os, re, shutil, sys, zipfile
src, work, dest = sys.argv[1], sys.argv[2], sys.argv[3]
major, client = int(sys.argv[4]), int(sys.argv[5])
def refuse(why):
    print(json.dumps({"refused": why})); sys.exit(2)
def safe_member(info):
    """A member stays inside the folder it is extracted to: a relative path of plain components
    (no absolute path, no empty, `.` or `..` component, no drive letter, no backslash or control
    character) that is a file or a folder, never a link."""
    name = info.filename
    parts = name[:-1].split("/") if name.endswith("/") else name.split("/")
    plain = all(p not in ("", ".", "..") and ":" not in p for p in parts)
    clean = not any(c == "\\" or ord(c) < 32 for c in name)
    link = (info.external_attr >> 16) & 0o170000 == 0o120000
    return bool(name) and plain and clean and not link


def dump_name(head):
    return "dump.dump" if head[:5] == b"PGDMP" else "dump.sql"
def leading_number(text):
    m = re.search(rb"(\d+)", text)
    return m and int(m.group(1))
def custom_writer(h):
    # PGDMP, archive version (3 bytes), int size, offset size, format, compression (a byte from
    # archive 1.15 on, an int before), creation time (7 ints), then strings: database, server
    # version, pg_dump version. An int is a sign byte and int-size bytes, little-endian.
    try:
        size = h[8]
        def integer(at):
            v = int.from_bytes(h[at + 1:at + 1 + size], "little")
            return -v if h[at] else v
        at = 11 + (1 if (h[5], h[6]) >= (1, 15) else 1 + size) + 7 * (1 + size)
        strings = []
        for _ in range(3):
            n = integer(at); at += 1 + size
            if at + max(n, 0) > len(h):
                return None
            strings.append(h[at:at + max(n, 0)]); at += max(n, 0)
        return leading_number(strings[2]) or leading_number(strings[1])
    except IndexError:
        return None
def check_postgres(head, manifest):
    if head[:5] == b"PGDMP":
        theirs = custom_writer(head)
    else:
        m = (re.search(rb"^-- Dumped by pg_dump version (\d+)", head, re.M)
             or re.search(rb"^-- Dumped from database version (\d+)", head, re.M))
        theirs = m and int(m.group(1))
    if theirs is None and manifest:
        theirs = (leading_number(str(manifest.get("pg_dump_version", "")).encode())
                  or leading_number(str(manifest.get("pg_version", "")).encode()))
    if theirs is not None and theirs > client:
        refuse("the dump was written by PostgreSQL %d's pg_dump, newer than this environment's "
               "PostgreSQL %d client (upgrade the environment's PostgreSQL first)"
               % (theirs, client))
with open(src, "rb") as f:
    head = f.read(4096)
shutil.rmtree(work, ignore_errors=True); os.makedirs(work)
shutil.rmtree(dest, ignore_errors=True)
if head[:5] == b"PGDMP":
    check_postgres(head, None)
    shutil.copyfile(src, os.path.join(work, "dump.dump"))
    print(json.dumps({"format": "custom", "filestore": False, "files": 0, "bytes": 0,
                      "manifest": None}))
    sys.exit(0)
os.makedirs(dest)
try:
    z = zipfile.ZipFile(src)
except zipfile.BadZipFile as e:
    refuse("not a zip archive nor a PostgreSQL custom dump: %s" % e)
with z:
    try:
        bad = z.testzip()
    except Exception as e:
        refuse("the archive is corrupted: %s" % e)
    if bad is not None:
        refuse("the archive is corrupted: member %s fails its CRC check" % bad)
    names = z.namelist()
    for info in z.infolist():
        if not safe_member(info):
            refuse("member %r escapes the archive" % info.filename)
    if "dump.sql" not in names:
        refuse("the archive has no dump.sql (not an Odoo backup with its database)")
    manifest = None
    if "manifest.json" in names:
        try:
            manifest = json.loads(z.read("manifest.json"))
        except ValueError as e:
            refuse("manifest.json is not JSON: %s" % e)
        theirs = int(str(manifest.get("version", "0")).split(".")[0].replace("saas~", "") or 0)
        if theirs > major:
            refuse("the backup is of Odoo %s, newer than this environment's %d.0" % (manifest.get("version"), major))
    with z.open("dump.sql") as f:
        head = f.read(4096)
    check_postgres(head, manifest)
    name = dump_name(head)
    with z.open("dump.sql") as f, open(os.path.join(work, name), "wb") as out:
        shutil.copyfileobj(f, out, 1 << 20)
    files = total = 0
    for info in z.infolist():
        if not info.filename.startswith("filestore/") or info.is_dir():
            continue
        target = os.path.join(dest, info.filename[len("filestore/"):])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with z.open(info) as f, open(target, "wb") as out:
            shutil.copyfileobj(f, out, 1 << 20)
        files += 1; total += info.file_size
print(json.dumps({"format": "custom" if name == "dump.dump" else "plain",
                  "filestore": any(n.startswith("filestore/") for n in names),
                  "files": files, "bytes": total, "manifest": manifest}))
