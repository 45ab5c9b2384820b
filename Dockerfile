# The effnet image the Kubernetes search runs (`effnet search --kubernetes ... --image IMAGE`): the
# command line on Debian, with CA certificates for weight downloads. Build and push it with
#   docker build -t registry.example/effnet:1 . && docker push registry.example/effnet:1
# and add `--build-arg FEATURES=wgpu` for candidates that train on a GPU (`--device wgpu`).
FROM rust:1.95-slim-bookworm AS build
ARG FEATURES=""
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p effnet ${FEATURES:+--features "$FEATURES"}

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/effnet /usr/local/bin/effnet
CMD ["effnet", "--help"]
