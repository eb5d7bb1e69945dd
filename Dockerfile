# relist in a container: `docker build -t relist .` then see docs/operations.md
# ("Containers and systemd") for the run, key and volume commands.

# Build stage: the workspace compiles with the pure-Rust protox, so no protoc is needed.
FROM rust:1.88-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin relist \
    && strip target/release/relist

# Run stage: the binary, a non-root user and the data volume; nothing else.
FROM debian:bookworm-slim
RUN groupadd --system --gid 10001 relist \
    && useradd --system --uid 10001 --gid relist --home-dir /var/lib/relist --shell /usr/sbin/nologin relist \
    && mkdir -p /var/lib/relist \
    && chown relist:relist /var/lib/relist
COPY --from=build /src/target/release/relist /usr/local/bin/relist
USER relist:relist
ENV RELIST_DATA_DIR=/var/lib/relist \
    RELIST_LISTEN=0.0.0.0:50051 \
    RELIST_HTTP=0.0.0.0:8080
VOLUME ["/var/lib/relist"]
EXPOSE 50051 8080
# /metrics answers once the daemon serves; bash's /dev/tcp keeps curl out of the image.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q 'relist_' <&3"]
ENTRYPOINT ["/usr/local/bin/relist"]
CMD ["serve"]
