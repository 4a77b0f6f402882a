#!/bin/sh
# Host keys are generated per container (so each test server has its own), then sshd runs in front.
set -eu
ssh-keygen -A >/dev/null
install -m 600 /berth/authorized_keys /root/.ssh/authorized_keys
# On the host network each test server listens on its own loopback port.
exec /usr/sbin/sshd -D -e -o "ListenAddress=127.0.0.1:${SSH_PORT:-22}"
