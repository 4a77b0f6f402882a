#!/usr/bin/python3
"""Berth's Odoo stand-in: the official image's wait-for-psql.py contract. Waits until PostgreSQL
accepts a connection to the `postgres` database; a value not given on the command line comes from
the config file ($ODOO_RC), as odoo itself would read it. Exits 1 after --timeout seconds."""
import argparse
import configparser
import os
import sys
import time

import psycopg2

parser = argparse.ArgumentParser()
for name in ("db_host", "db_port", "db_user", "db_password"):
    parser.add_argument("--" + name)
parser.add_argument("--timeout", type=int, default=5)
args = parser.parse_args()
config = configparser.RawConfigParser()
config.read(os.environ.get("ODOO_RC", ""))


def value(name):
    found = getattr(args, name) or config.get("options", name, fallback=None)
    return None if found in ("", "False", "false", "None") else found


params = {key: value("db_" + key) for key in ("host", "port", "user", "password")}
start, error = time.time(), ""
while time.time() - start < args.timeout:
    try:
        psycopg2.connect(dbname="postgres", connect_timeout=3, **params).close()
        error = ""
        break
    except psycopg2.OperationalError as e:
        error = e
    time.sleep(1)
if error:
    print("Database connection failure: %s" % error, file=sys.stderr)
    sys.exit(1)
