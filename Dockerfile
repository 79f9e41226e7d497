# syntax=docker/dockerfile:1
# Build:  docker build -t streamedge .
#         docker build --build-arg FEATURES=kubernetes -t streamedge:kubernetes .
#           (cargo features, e.g. `kubernetes`: fleet members from EndpointSlices)
# Run:    docker run --rm -p 8080:8080 -p 8443:8443 -p 9090:9090 \
#           -v "$PWD/my-edge.yaml:/etc/streamedge/edge.yaml:ro" streamedge
# The config is read from /etc/streamedge/edge.yaml; listen on 0.0.0.0 inside the container.
# Without a mounted config the image runs conf/docker.yaml: the demo origin and the edge.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY conf ./conf
COPY loadtest ./loadtest
ARG FEATURES=""
RUN cargo build --release --locked --bin streamedge --features "$FEATURES" \
 && strip target/release/streamedge

FROM debian:bookworm-slim
# ca-certificates: https origins are verified against the system roots.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin streamedge \
 && mkdir -p /etc/streamedge
COPY --from=build /src/target/release/streamedge /usr/local/bin/streamedge
COPY conf/docker.yaml /etc/streamedge/edge.yaml
USER streamedge
EXPOSE 8080 8443 9090
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/streamedge"]
CMD ["--config", "/etc/streamedge/edge.yaml"]
