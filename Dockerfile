# stickylb container image.
#
#   docker build -t stickylb .
#   docker run -p 8080:8080 --stop-timeout 35 -e STICKYLB_SECRET="$(openssl rand -base64 48)" \
#     -v "$PWD/my.toml:/etc/stickylb/stickylb.toml:ro" stickylb
#
# The config is read from /etc/stickylb/stickylb.toml (STICKYLB_CONFIG); the image ships
# config/stickylb.toml there as a default: mount your own file over it. The cookie secret comes
# from STICKYLB_SECRET (it wins over session.secret / secret_file in the file); without one,
# each container signs with a random key of its own. The HEALTHCHECK runs `stickylb health`,
# which probes the admin listener the config names (127.0.0.1:9090 in the default config), or the
# first client listener when admin.listen = "". To reach the admin API from outside the
# container, set admin.listen = "0.0.0.0:9090" (and admin.token) in your file and publish 9090.
# `docker stop` waits 10 s before SIGKILL, less than server.shutdown_timeout (30 s): run with
# --stop-timeout 35 (compose: stop_grace_period: 35s) so in-flight requests can finish.

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
 && cargo build --profile dist --locked \
 && rm -rf src

# The real sources. touch: COPY keeps the files' old mtimes, which cargo could take as older
# than the dummy build and so keep the dummy binary.
COPY src ./src
RUN touch src/main.rs src/lib.rs \
 && cargo build --profile dist --locked --bin stickylb \
 && strip --strip-debug target/dist/stickylb \
 && ./target/dist/stickylb --version

# ---- run ----
FROM debian:bookworm-slim
# No extra packages: the HEALTHCHECK is the binary itself (`stickylb health`).
RUN groupadd --system --gid 10001 stickylb \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin stickylb

COPY --from=build /build/target/dist/stickylb /usr/local/bin/stickylb
# Default config; mount your own at this path (read-only is fine).
COPY config/stickylb.toml /etc/stickylb/stickylb.toml
ENV STICKYLB_CONFIG=/etc/stickylb/stickylb.toml

USER 10001:10001
# 8080: traffic (server.listen); 9090: admin API (admin.listen; loopback in the default config).
EXPOSE 8080 9090
# `stickylb health` reads the same config (STICKYLB_CONFIG) and probes the admin /healthz, or the
# client listener when the admin API is off, with a 2 s timeout. It exits 2 for a config error,
# which Docker reserves: the shell form maps every failure to 1 (unhealthy).
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD stickylb health || exit 1
ENTRYPOINT ["stickylb"]
CMD ["run", "--config", "/etc/stickylb/stickylb.toml"]
