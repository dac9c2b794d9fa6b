# haproxy-rs container image (used by compose/docker-compose.yml and compose/cluster.yml).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked

FROM debian:bookworm-slim
COPY --from=build /src/target/release/haproxy-rs /usr/local/bin/haproxy-rs
EXPOSE 6379 6380 8404
ENTRYPOINT ["/usr/local/bin/haproxy-rs"]
CMD ["run", "--listen", ":6379", "--read-listen", ":6380", "--stats", ":8404"]
