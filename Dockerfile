# syntax=docker/dockerfile:1
# stickylb container image.
#
#   docker build -t stickylb .
#   docker run -p 8080:8080 -e STICKYLB_SECRET=... \
#     -v "$PWD/my.toml:/etc/stickylb/stickylb.toml:ro" stickylb
#
# The config is read from /etc/stickylb/stickylb.toml (STICKYLB_CONFIG); the image ships
# config/stickylb.toml there as a default: mount your own file over it. Its admin listener is
# 127.0.0.1:9090, which the HEALTHCHECK uses; to reach the admin API from outside the container,
# set admin.listen = "0.0.0.0:9090" (and admin.token) in your file and publish 9090.

# ---- build ----
FROM rust:1-bookworm AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /build

# Dependencies first, against dummy sources, so this layer is rebuilt only when Cargo.toml or
# Cargo.lock change. Explicit [[bench]]/[[test]]/[[example]] targets need a file to exist for
# cargo to read the manifest; `cargo build` does not compile them, so empty files do.
# (If a build.rs is ever added, COPY it here too.)
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && awk -F'"' '/^\[/ { d = "" } /^\[\[bench\]\]/ { d = "benches" } /^\[\[test\]\]/ { d = "tests" } \
               /^\[\[example\]\]/ { d = "examples" } d && /^name *=/ { print d "/" $2 ".rs" }' Cargo.toml \
    | while read -r f; do mkdir -p "$(dirname "$f")" && touch "$f"; done \
 && cargo build --release --locked \
 && rm -rf src

# The real sources. touch: COPY keeps the files' old mtimes, which cargo could take as older
# than the dummy build and so keep the dummy binary.
COPY src ./src
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin stickylb \
 && strip --strip-debug target/release/stickylb \
 && ./target/release/stickylb --version

# ---- run ----
FROM debian:bookworm-slim
# curl only for the HEALTHCHECK (no recommends: no CA bundle needed for a loopback check).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 stickylb \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin stickylb

COPY --from=build /build/target/release/stickylb /usr/local/bin/stickylb
# Default config; mount your own at this path (read-only is fine).
COPY config/stickylb.toml /etc/stickylb/stickylb.toml
ENV STICKYLB_CONFIG=/etc/stickylb/stickylb.toml

USER 10001:10001
# 8080: traffic (server.listen); 9090: admin API (admin.listen; loopback in the default config).
EXPOSE 8080 9090
# Checks the running process through the admin listener's /healthz (shell form for `|| exit 1`:
# Docker reads exit status 1 as unhealthy, while curl fails with other codes).
# hadolint ignore=DL3025
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD curl -fsS -o /dev/null http://127.0.0.1:9090/healthz || exit 1
ENTRYPOINT ["stickylb"]
CMD ["run", "--config", "/etc/stickylb/stickylb.toml"]
