# The Odoo STAND-IN test image: shaped like the official odoo:<version> image (user odoo, volumes
# /var/lib/odoo and /mnt/extra-addons, ports 8069/8072, ODOO_RC=/etc/odoo/odoo.conf, /entrypoint.sh
# with HOST/PORT/USER/PASSWORD) but running Berth's small stand-in program, not Odoo: real Odoo cannot
# be installed here. It honours only the contract Berth relies on (README). Built offline: apt and pip
# reach local repositories made during this build (a stand-in for a server's Debian mirror and PyPI).
ARG BASE
FROM ${BASE}
ARG ODOO_VERSION=17.0
ENV ODOO_VERSION=${ODOO_VERSION} LANG=C.UTF-8
COPY odoo-standin/ /opt/berth-standin/src/
RUN cd /opt/berth-standin/src \
 && useradd --system --user-group --home-dir /var/lib/odoo --create-home odoo \
 && install -m 755 odoo /usr/bin/odoo \
 && install -m 755 entrypoint.sh /entrypoint.sh \
 && install -m 755 wait-for-psql.py /usr/local/bin/wait-for-psql.py \
 && install -D -m 644 -o odoo odoo.conf /etc/odoo/odoo.conf \
 && install -d -o odoo /mnt/extra-addons \
 && sh make-apt-repo.sh /opt/berth-standin/apt \
 && python3 make-wheel.py /opt/berth-standin/wheels \
 && install -m 644 pip.conf /etc/pip.conf
VOLUME ["/var/lib/odoo", "/mnt/extra-addons"]
EXPOSE 8069 8072
ENV ODOO_RC=/etc/odoo/odoo.conf
USER odoo
ENTRYPOINT ["/entrypoint.sh"]
CMD ["odoo"]
