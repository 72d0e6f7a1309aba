# The MinIO server the tests use (make minio builds it with go install), as
# an image for the compose cluster: build context = a folder holding the
# minio binary (make image-minio makes it).
ARG BASE=debian:bookworm-slim
FROM ${BASE}
RUN groupadd --system --gid 10001 minio \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home --shell /usr/sbin/nologin minio \
 && mkdir -p /data && chown minio:minio /data
COPY minio /usr/local/bin/minio
USER 10001:10001
ENV MINIO_UPDATE=off MINIO_BROWSER=off
EXPOSE 9000
ENTRYPOINT ["/usr/local/bin/minio"]
CMD ["server", "--quiet", "--address", ":9000", "/data"]
