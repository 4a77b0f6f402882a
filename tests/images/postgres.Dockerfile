# A PostgreSQL image whose entrypoint honours the official postgres image's variables
# (POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB, PGDATA; data in a volume), so the deploy code that
# runs here runs unchanged against postgres:<version> in production.
ARG BASE
FROM ${BASE}
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
VOLUME /var/lib/postgresql/data
EXPOSE 5432
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["postgres"]
