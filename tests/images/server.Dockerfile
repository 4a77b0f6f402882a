# The "server" of the test bed: OpenSSH with key authentication only. The machine's Docker socket is
# mounted at /var/run/docker.sock when the container starts, so Berth reaches Docker through SSH
# exactly as on a real server.
ARG BASE
FROM ${BASE}
RUN mkdir -p /run/sshd /root/.ssh && chmod 700 /root/.ssh \
 && rm -f /etc/ssh/ssh_host_* \
 && printf '%s\n' \
      'PasswordAuthentication no' \
      'KbdInteractiveAuthentication no' \
      'PermitRootLogin prohibit-password' \
      'AllowTcpForwarding yes' \
      'AllowStreamLocalForwarding yes' \
      'MaxSessions 64' \
      'MaxStartups 64' \
      > /etc/ssh/sshd_config.d/berth-test.conf
COPY server-entrypoint.sh /usr/local/bin/server-entrypoint
EXPOSE 22
ENTRYPOINT ["/usr/local/bin/server-entrypoint"]
