# Build stage: compile the release binary without the development tools (migrations are
# embedded in it).
FROM rust:1-bookworm AS build
WORKDIR /src

# Dependencies first, in a layer of their own: a change to the project's sources does not rebuild
# every crate. Each workspace member gets an empty source tree for this step.
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY crates/iotpay/Cargo.toml crates/iotpay/Cargo.toml
COPY crates/iotpay-notify/Cargo.toml crates/iotpay-notify/Cargo.toml
COPY crates/iotpay-devtools/Cargo.toml crates/iotpay-devtools/Cargo.toml
RUN mkdir -p src benches crates/iotpay/src crates/iotpay-notify/src crates/iotpay-devtools/src \
    && echo 'fn main() {}' > src/main.rs && echo 'fn main() {}' > benches/cpu_path.rs \
    && touch crates/iotpay/src/lib.rs crates/iotpay-notify/src/lib.rs crates/iotpay-devtools/src/lib.rs \
    && cargo build --release --locked --no-default-features --bin iotpay-notify \
    && rm -rf src crates/iotpay/src crates/iotpay-notify/src crates/iotpay-devtools/src

# The service's sources only: the development tools are not compiled into this binary
# (--no-default-features turns the `devtools` feature off); their manifest is needed by Cargo.
COPY src ./src
COPY crates/iotpay/src ./crates/iotpay/src
COPY crates/iotpay-notify/src ./crates/iotpay-notify/src
COPY crates/iotpay-notify/migrations ./crates/iotpay-notify/migrations
RUN mkdir -p crates/iotpay-devtools/src && touch crates/iotpay-devtools/src/lib.rs \
    && touch src/main.rs crates/iotpay/src/lib.rs crates/iotpay-notify/src/lib.rs \
    && cargo build --release --locked --no-default-features --bin iotpay-notify

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
