# syntax=docker/dockerfile:1
# Build:  docker build -t ghcr.io/upgrade-guard/upgrade-guard:0.1.0 .
# (BuildKit is required for the cache mounts; it is the default builder.)

# Bookworm to match the Debian 12 runtime; at least the crate's rust-version.
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl \
 && apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
# C code in dependencies (e.g. TLS crypto) must be built against musl too.
ENV CC_x86_64_unknown_linux_musl=musl-gcc \
    CARGO_PROFILE_DIST_STRIP=symbols
WORKDIR /src
COPY . .
# Cache mounts keep downloaded crates and build artefacts between builds; the
# binary is copied out in the same step because the cache is not in the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --profile dist --locked --target x86_64-unknown-linux-musl \
 && install -D -m 0755 target/x86_64-unknown-linux-musl/dist/upgrade-guard /out/upgrade-guard

# Static binary: no libc, shell or package manager in the runtime image.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/upgrade-guard /usr/local/bin/upgrade-guard
# Numeric so Kubernetes' runAsNonRoot check can verify it.
USER 65532:65532
EXPOSE 8443 9090
ENTRYPOINT ["/usr/local/bin/upgrade-guard"]
CMD ["serve"]
