# syntax=docker/dockerfile:1
#
# The `hms` binary in a small image; each service of docker-compose.yml runs it with its own
# subcommand (`hms edge`, `hms command`, `hms project`, `hms query`).
#
#   docker build -t hms:local .
#   docker run --rm hms:local commands
#
# .ci/compose-check lints this file (hadolint) and checks that every COPY source exists and that
# every workspace member's Cargo.toml and sources are copied: add a crate to the workspace, and
# add it to the two lists below.

# Cargo.toml asks for rust-version 1.94 (sqlx 0.9); the developers' and CI's toolchain is 1.95.
# Bookworm here and below: the binary links against the builder's glibc.
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src

# 1. The dependencies alone, in a layer of their own that is rebuilt only when a manifest or
#    Cargo.lock changes: the workspace's manifests with empty sources (each member is a library,
#    the root package's one target is the `hms` binary, src/main.rs). Examples, tests and
#    benches are not built by `--bin hms`, so they need no stand-ins.
COPY Cargo.toml Cargo.lock ./
COPY domain/Cargo.toml domain/
COPY platform/Cargo.toml platform/
COPY edge-agent/Cargo.toml edge-agent/
COPY command-service/Cargo.toml command-service/
COPY projections/Cargo.toml projections/
COPY query-api/Cargo.toml query-api/
RUN set -eux; \
    for crate in domain platform edge-agent command-service projections query-api; do \
        mkdir -p "$crate/src"; \
        : > "$crate/src/lib.rs"; \
    done; \
    mkdir -p src; \
    echo 'fn main() {}' > src/main.rs; \
    cargo build --release --locked --bin hms; \
    rm -rf src domain/src platform/src edge-agent/src command-service/src projections/src query-api/src

# 2. The real sources. Only what the binary is built from, so editing a test or the README
#    does not rebuild the image: each crate's src/, and migrations/ (embedded by
#    projections' `sqlx::migrate!("../migrations")`, which projections/build.rs watches).
COPY src src
COPY domain/src domain/src
COPY platform/src platform/src
COPY edge-agent/src edge-agent/src
COPY command-service/src command-service/src
COPY projections/src projections/src
COPY projections/build.rs projections/
COPY query-api/src query-api/src
COPY migrations migrations
# COPY keeps the files' own (older) times: touch the crate roots so cargo sees them newer than
# the stand-ins it built in step 1 and compiles the workspace's crates again.
RUN set -eux; \
    touch src/main.rs domain/src/lib.rs platform/src/lib.rs edge-agent/src/lib.rs \
        command-service/src/lib.rs projections/src/lib.rs query-api/src/lib.rs; \
    cargo build --release --locked --bin hms; \
    cp target/release/hms /usr/local/bin/hms; \
    /usr/local/bin/hms --version


FROM debian:bookworm-slim AS runtime

# ca-certificates for TLS to outside services; curl for the healthchecks of docker-compose.yml.
# Not pinned: bookworm's versions only move with security fixes.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*

# `hms` runs the services. `hms-query` is for the query API: it is in the group `hms`, so it
# may read the command service's public token key (0644) in a shared volume, but not the
# private keys beside it (0600, owner only). The data directory is group-writable for the same
# reason; Docker copies its owner and mode into a new named volume mounted there.
RUN groupadd --system --gid 10001 hms \
    && useradd --system --uid 10001 --gid hms --home-dir /var/lib/hms --no-create-home \
        --shell /usr/sbin/nologin hms \
    && useradd --system --uid 10002 --gid hms --home-dir /var/lib/hms --no-create-home \
        --shell /usr/sbin/nologin hms-query \
    && install -d -o hms -g hms -m 0770 /var/lib/hms

COPY --from=builder /usr/local/bin/hms /usr/local/bin/hms

ENV HMS_DATA_DIR=/var/lib/hms
WORKDIR /var/lib/hms
# hms:hms, by number so a runtime that checks for a non-root user sees one without /etc/passwd.
USER 10001:10001
# edge agent, command service, query API, projector metrics
EXPOSE 8080 8081 8082 9464
ENTRYPOINT ["hms"]
CMD ["--help"]
