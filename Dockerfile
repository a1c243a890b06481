# syntax=docker/dockerfile:1
#
# The weir image: `weir serve` as a non-root user, state in /var/lib/weir.
#
#   docker build -t weir .
#   docker run -p 8080:8080 -v weir-data:/var/lib/weir \
#     -e WEIR_WORKSPACE_SECRET="$(openssl rand -base64 48)" weir
#
# It listens on 0.0.0.0:8080, so weir requires WEIR_WORKSPACE_SECRET (at
# least 32 random bytes). Scale-out: `serve --role ingest` or `--role
# worker` with WEIR_AMQP_URL (docker-compose.yml, deploy/helm/weir).

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
COPY . .
# The cache mounts keep the crates and the compiled dependencies between
# builds; the binary is copied out of them.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p weir-runtime --bin weir \
    && cp target/release/weir /usr/local/bin/weir

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 weir \
    && useradd --system --uid 10001 --gid weir --home-dir /var/lib/weir \
       --no-create-home --shell /usr/sbin/nologin weir \
    && install -d -o weir -g weir -m 0750 /var/lib/weir
COPY --from=builder /usr/local/bin/weir /usr/local/bin/weir
# The examples; mount your own folders over them.
COPY flows/ /etc/weir/flows/
COPY integrations/ /etc/weir/integrations/
COPY actions/ /etc/weir/actions/

ENV WEIR_DATA=/var/lib/weir \
    WEIR_FLOWS=/etc/weir/flows \
    WEIR_INTEGRATIONS=/etc/weir/integrations \
    WEIR_ACTIONS=/etc/weir/actions \
    WEIR_LISTEN=0.0.0.0:8080

USER weir:weir
WORKDIR /var/lib/weir
VOLUME ["/var/lib/weir"]
EXPOSE 8080

# GET /healthz on the port of WEIR_LISTEN, with bash alone (no curl).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${WEIR_LISTEN##*:} && printf 'GET /healthz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && read -r -t 4 status <&3 && [[ $status == *' 200 '* ]]"]

# SIGTERM stops weir gracefully (WEIR_GRACE, 10s by default).
STOPSIGNAL SIGTERM
ENTRYPOINT ["weir"]
CMD ["serve"]
