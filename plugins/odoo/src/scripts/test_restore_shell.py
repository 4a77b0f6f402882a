"""The restore's shell scripts, run as the restore runs them: `sh -c <script> sh <arguments>`.
restore_switch.sh swaps the filestore for the restored one (and back); restore_clean_up.sh removes
what a successful restore kept aside.

Run from the repository's root: python3 -m unittest discover -s plugins/odoo/src/scripts -p 'test_*.py'
"""

import subprocess
import tempfile
import unittest
from pathlib import Path

HERE = Path(__file__).parent


def run(script, *arguments):
    """Runs `script` with positional `arguments`; returns its exit status and last output line."""
    done = subprocess.run(
        ["sh", "-c", (HERE / script).read_text(), "sh", *map(str, arguments)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    return done.returncode, lines[-1] if lines else ""


def folder(path, content):
    """A filestore folder holding one file with `content`."""
    (path / "ab").mkdir(parents=True)
    (path / "ab" / "abcdef").write_text(content)
    return path


def content(path):
    return (path / "ab" / "abcdef").read_text()


class Switch(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.dir = Path(tmp.name)
        self.current = self.dir / "shop"
        self.restored = self.dir / "shop_restore"
        self.previous = self.dir / "shop_previous"

    def test_the_restored_filestore_takes_the_current_ones_place(self):
        folder(self.current, "current")
        folder(self.restored, "restored")
        folder(self.previous, "from an earlier restore")
        self.assertEqual(
            run("restore_switch.sh", self.current, self.restored, self.previous), (0, "switched")
        )
        self.assertEqual(content(self.current), "restored")
        self.assertEqual(content(self.previous), "current")
        self.assertFalse(self.restored.exists())
        # And back, as the health check does when Odoo is not healthy on the restored data.
        self.assertEqual(
            run("restore_switch.sh", self.current, self.previous, self.restored), (0, "switched")
        )
        self.assertEqual(content(self.current), "current")
        self.assertEqual(content(self.restored), "restored")
        self.assertFalse(self.previous.exists())

    def test_a_database_that_never_had_a_filestore_gets_the_restored_one(self):
        folder(self.restored, "restored")
        self.assertEqual(
            run("restore_switch.sh", self.current, self.restored, self.previous), (0, "switched")
        )
        self.assertEqual(content(self.current), "restored")
        self.assertFalse(self.previous.exists())

    def test_a_missing_incoming_filestore_moves_nothing(self):
        folder(self.current, "current")
        folder(self.previous, "kept")
        status, said = run("restore_switch.sh", self.current, self.restored, self.previous)
        self.assertEqual((status, said), (1, "%s is missing" % self.restored))
        self.assertEqual((content(self.current), content(self.previous)), ("current", "kept"))

    def test_names_are_arguments_never_code(self):
        odd = self.dir / "shop; touch pwned $(touch pwned2) `touch pwned3`"
        folder(self.restored, "restored")
        self.assertEqual(run("restore_switch.sh", odd, self.restored, self.previous), (0, "switched"))
        self.assertEqual(content(odd), "restored")
        self.assertEqual(sorted(p.name for p in self.dir.iterdir()), [odd.name])


class CleanUp(unittest.TestCase):
    def test_the_previous_filestore_and_the_dump_go_and_missing_ones_are_fine(self):
        with tempfile.TemporaryDirectory() as tmp:
            previous = folder(Path(tmp) / "shop_previous", "old")
            work = Path(tmp) / ".berth-restore"
            work.mkdir()
            (work / "dump.sql").write_text("SELECT 1;")
            kept = folder(Path(tmp) / "shop", "current")
            self.assertEqual(run("restore_clean_up.sh", previous, work), (0, "removed"))
            self.assertEqual([p.name for p in Path(tmp).iterdir()], [kept.name])
            self.assertEqual(run("restore_clean_up.sh", previous, work), (0, "removed"))


if __name__ == "__main__":
    unittest.main()
