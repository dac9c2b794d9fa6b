# syntax=docker/dockerfile:1
# haproxy-rs container image: `docker build -t haproxy-rs .` (compose/*.yml and deploy/kubernetes use
# it). The release binary on a distroless base (glibc and libgcc, no shell, no package manager), run
# as the `nonroot` user (uid 65532); ports 6379 (read/write), 6380 (reads) and 8404 (stats).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The caches speed up rebuilds; the binary is copied out of the cached target/ in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin haproxy-rs \
    && cp target/release/haproxy-rs /haproxy-rs

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /haproxy-rs /usr/local/bin/haproxy-rs
USER nonroot
EXPOSE 6379 6380 8404
ENTRYPOINT ["/usr/local/bin/haproxy-rs"]
CMD ["run", "--listen", ":6379", "--read-listen", ":6380", "--stats", ":8404"]
