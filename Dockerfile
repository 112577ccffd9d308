# Build stage: compile the release binary (migrations are embedded in it).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY src ./src
COPY migrations ./migrations
COPY tests ./tests
COPY benches ./benches
RUN cargo build --release --locked --bin iotpay-notify

# Runtime stage: a small image, CA roots for TLS to IOTPay, an unprivileged user.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home iotpay
COPY --from=build /src/target/release/iotpay-notify /usr/local/bin/iotpay-notify
USER 10001
ENV LISTEN_ADDR=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["iotpay-notify"]
CMD ["serve"]
