"""The restore's extraction (restore_extract.py), run as the restore runs it: `python3 -c <script>`
with the backup, the work folder, the filestore folder, Odoo's and the PostgreSQL client's major
versions. Each test builds its backup in a temporary folder.

Run from the repository's root: python3 -m unittest discover -s plugins/odoo/src/scripts -p 'test_*.py'
"""

import json
import subprocess
import sys
import tempfile
import unittest
import zipfile
from pathlib import Path

SCRIPT = Path(__file__).with_name("restore_extract.py")

PLAIN_DUMP = (
    b"--\n-- PostgreSQL database dump\n--\n\n"
    b"-- Dumped from database version 16.2\n-- Dumped by pg_dump version 16.2\n\n"
    b"CREATE TABLE res_partner (id int, name text);\n"
)


def plain_dump(version):
    return PLAIN_DUMP.replace(b"16.2", version.encode())


def custom_dump(pg_dump="16.2", server="16.2", archive=(1, 15), body=b"\0" * 64):
    """A PostgreSQL custom-format dump's header (as pg_dump writes it), then `body`."""
    size = 4

    def integer(n):
        return bytes([1 if n < 0 else 0]) + abs(n).to_bytes(size, "little")

    def string(s):
        data = s.encode()
        return integer(len(data)) + data

    head = b"PGDMP" + bytes([archive[0], archive[1], 0, size, 8, 1])
    # The compression: one byte from archive version 1.15 on, an int before.
    head += bytes([0]) if archive >= (1, 15) else integer(0)
    head += b"".join(integer(v) for v in (5, 30, 12, 4, 11, 124, 0))  # creation time
    head += string("shop") + string(server) + string(pg_dump)
    return head + body


class Extraction(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.dir = Path(tmp.name)
        self.src = self.dir / "restore" / "backup.zip"
        self.src.parent.mkdir()
        self.work = self.dir / "data" / ".berth-restore"
        self.dest = self.dir / "data" / "filestore" / "shop_restore"

    def archive(self, members, compression=zipfile.ZIP_DEFLATED):
        """Writes a zip of (name, bytes) members as the backup; returns its bytes."""
        with zipfile.ZipFile(self.src, "w", compression) as z:
            for name, data in members:
                z.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
        return self.src.read_bytes()

    def extract(self, major=17, client=16):
        """Runs the extraction; returns its exit status and the JSON of its last line."""
        argv = [str(self.src), str(self.work), str(self.dest), str(major), str(client)]
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT.read_text(), *argv],
            capture_output=True,
            text=True,
            timeout=120,
        )
        lines = [line for line in done.stdout.splitlines() if line.strip()]
        self.assertTrue(lines, "no output; stderr: %s" % done.stderr)
        return done.returncode, json.loads(lines[-1])

    def assert_refused(self, says, **versions):
        status, report = self.extract(**versions)
        self.assertEqual(status, 2, report)
        self.assertIn(says, report.get("refused", ""))

    def test_the_script_compiles(self):
        compile(SCRIPT.read_text(), str(SCRIPT), "exec")

    def test_an_odoo_backup_is_extracted_dump_and_filestore(self):
        manifest = {"version": "17.0", "pg_version": "16.2", "modules": {"base": "17.0.1.3"}}
        self.archive([
            ("dump.sql", PLAIN_DUMP),
            ("filestore/ab/", b""),
            ("filestore/ab/abcdef0123", b"an attachment"),
            ("filestore/cd/cdef012345", b"x" * 1000),
            ("manifest.json", json.dumps(manifest).encode()),
        ])
        # What an earlier attempt left is replaced.
        (self.work / "stale").mkdir(parents=True)
        (self.dest / "stale").mkdir(parents=True)
        status, report = self.extract()
        self.assertEqual(status, 0, report)
        self.assertEqual(
            report,
            {"format": "plain", "filestore": True, "files": 2, "bytes": 1013,
             "manifest": manifest},
        )
        self.assertEqual(sorted(p.name for p in self.work.iterdir()), ["dump.sql"])
        self.assertEqual((self.work / "dump.sql").read_bytes(), PLAIN_DUMP)
        self.assertEqual((self.dest / "ab" / "abcdef0123").read_bytes(), b"an attachment")
        self.assertEqual((self.dest / "cd" / "cdef012345").read_bytes(), b"x" * 1000)
        self.assertFalse((self.dest / "stale").exists())

    def test_a_backup_without_filestore_says_so_and_extracts_none(self):
        self.archive([("dump.sql", PLAIN_DUMP)])
        status, report = self.extract()
        self.assertEqual(status, 0, report)
        self.assertEqual(report["filestore"], False)
        self.assertEqual((report["files"], report["bytes"], report["manifest"]), (0, 0, None))
        self.assertEqual(list(self.dest.iterdir()), [])

    def test_a_custom_format_dump_sql_is_kept_as_a_custom_dump(self):
        dump = custom_dump()
        self.archive([("dump.sql", dump), ("filestore/ab/abcdef", b"a")])
        status, report = self.extract()
        self.assertEqual(status, 0, report)
        self.assertEqual((report["format"], report["filestore"]), ("custom", True))
        self.assertEqual((self.work / "dump.dump").read_bytes(), dump)
        self.assertFalse((self.work / "dump.sql").exists())

    def test_a_bare_custom_dump_is_copied_whole(self):
        for archive in [(1, 14), (1, 15), (1, 16)]:
            with self.subTest(archive=archive):
                dump = custom_dump(archive=archive)
                self.src.write_bytes(dump)
                status, report = self.extract()
                self.assertEqual(status, 0, report)
                self.assertEqual(
                    report,
                    {"format": "custom", "filestore": False, "files": 0, "bytes": 0,
                     "manifest": None},
                )
                self.assertEqual((self.work / "dump.dump").read_bytes(), dump)

    def test_a_dump_of_a_newer_pg_dump_is_refused(self):
        says = "written by PostgreSQL 99's pg_dump, newer than this environment's PostgreSQL 16"
        for label, dump in [
            ("plain", plain_dump("99.1")),
            ("custom", custom_dump(pg_dump="99.1 (Debian 99.1-1)")),
            ("custom, archive 1.14", custom_dump(pg_dump="99.1", archive=(1, 14))),
            ("custom, no pg_dump version", custom_dump(pg_dump="", server="99.0")),
        ]:
            with self.subTest(label):
                self.archive([("dump.sql", dump)])
                self.assert_refused(says)
                if dump.startswith(b"PGDMP"):  # a custom dump may also come bare
                    self.src.write_bytes(dump)
                    self.assert_refused(says)
        # The same dump is read by a client as new as its pg_dump.
        self.archive([("dump.sql", plain_dump("99.1"))])
        status, report = self.extract(client=99)
        self.assertEqual(status, 0, report)

    def test_the_manifest_names_the_pg_dump_when_the_dump_does_not(self):
        bare_sql = b"CREATE TABLE res_partner (id int);\n"
        for manifest in [{"pg_dump_version": "pg_dump (PostgreSQL) 17.2"}, {"pg_version": "17.0"}]:
            with self.subTest(manifest=manifest):
                manifest = {"version": "17.0", **manifest}
                self.archive([("dump.sql", bare_sql), ("manifest.json", json.dumps(manifest))])
                self.assert_refused("PostgreSQL 17's pg_dump")
        # The dump's own header wins over the manifest.
        manifest = {"version": "17.0", "pg_version": "17.0"}
        self.archive([("dump.sql", PLAIN_DUMP), ("manifest.json", json.dumps(manifest))])
        status, report = self.extract()
        self.assertEqual(status, 0, report)

    def test_a_backup_of_a_newer_odoo_is_refused(self):
        for version in ["18.0", "saas~18.2"]:
            with self.subTest(version=version):
                manifest = json.dumps({"version": version})
                self.archive([("dump.sql", PLAIN_DUMP), ("manifest.json", manifest)])
                self.assert_refused("newer than this environment's 17.0")
        self.archive([("dump.sql", PLAIN_DUMP), ("manifest.json", json.dumps({"version": "16.0"}))])
        status, report = self.extract()
        self.assertEqual(status, 0, report)

    def test_a_manifest_that_is_not_json_is_refused(self):
        self.archive([("dump.sql", PLAIN_DUMP), ("manifest.json", b"{version: 17")])
        self.assert_refused("manifest.json is not JSON")

    def test_a_truncated_archive_is_refused(self):
        whole = self.archive([("dump.sql", PLAIN_DUMP * 50), ("filestore/ab/abcdef", b"a")])
        self.src.write_bytes(whole[: len(whole) // 2])
        self.assert_refused("not a zip archive nor a PostgreSQL custom dump")

    def test_a_member_failing_its_crc_is_refused(self):
        whole = bytearray(self.archive([("dump.sql", PLAIN_DUMP)], zipfile.ZIP_STORED))
        whole[whole.index(b"CREATE TABLE")] ^= 0xFF
        self.src.write_bytes(bytes(whole))
        self.assert_refused("member dump.sql fails its CRC check")

    def test_a_damaged_deflated_member_is_refused(self):
        whole = bytearray(self.archive([("dump.sql", PLAIN_DUMP * 20)]))
        # Inside dump.sql's deflated data, after its local header (30 bytes and the name).
        for at in range(40, 60):
            whole[at] ^= 0xFF
        self.src.write_bytes(bytes(whole))
        self.assert_refused("the archive is corrupted")

    def test_an_archive_without_dump_sql_is_refused(self):
        self.archive([("filestore/ab/abcdef", b"a"), ("manifest.json", b"{}")])
        self.assert_refused("the archive has no dump.sql")

    def test_members_that_escape_the_archive_are_refused(self):
        for name in ["filestore/../../../etc/cron.d/evil", "/etc/passwd", "../dump.sql",
                     "filestore//etc/evil", "filestore/./x", "C:/evil", "filestore/C:evil",
                     "filestore\\..\\evil", "filestore/a\x1b[2Jb"]:
            with self.subTest(name=name):
                self.archive([("dump.sql", PLAIN_DUMP), (name, b"evil")])
                self.assert_refused("escapes the archive")
                self.assertFalse((self.dir / "etc").exists())

    def test_a_restored_archive_never_writes_outside_its_folder(self):
        # `filestore//abs/path` once passed the check and was written at the absolute path.
        outside = self.dir / "outside"
        self.archive([("dump.sql", PLAIN_DUMP), ("filestore/" + str(outside), b"evil")])
        self.assert_refused("escapes the archive")
        self.assertFalse(outside.exists())

    def test_links_in_the_archive_are_refused(self):
        link = zipfile.ZipInfo("filestore/ab/link")
        link.external_attr = (0o120777 << 16)
        with zipfile.ZipFile(self.src, "w") as z:
            z.writestr("dump.sql", PLAIN_DUMP)
            z.writestr(link, "/etc")
        self.assert_refused("escapes the archive")

    def test_what_is_neither_a_zip_nor_a_dump_is_refused(self):
        self.src.write_bytes(b"just some bytes")
        self.assert_refused("not a zip archive nor a PostgreSQL custom dump")


if __name__ == "__main__":
    unittest.main()
