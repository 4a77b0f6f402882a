#!/bin/sh
# Host keys are generated per container (so each test server has its own), then sshd runs in front.
set -eu
ssh-keygen -A >/dev/null
install -m 600 /berth/authorized_keys /root/.ssh/authorized_keys
exec /usr/sbin/sshd -D -e
