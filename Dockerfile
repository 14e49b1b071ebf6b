# portcullis image: built with the pinned lockfile, run from distroless as a numeric non-root
# user with the binary and the default policies only (no shell, no package manager).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# Build settings (.cargo/config.toml: the allocator's memory option).
COPY .cargo ./.cargo
COPY src ./src
COPY policies ./policies
RUN cargo build --release --locked \
 && mkdir -p /out/policies \
 && cp target/release/portcullis /out/portcullis \
 && cp policies/*.yaml policies/README.md /out/policies/

# cc: glibc and libgcc, which the binary links against; nothing else.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/portcullis /portcullis
COPY --from=build /out/policies /policies
# The serving certificate is mounted at /certs (tls.crt, tls.key) from a Secret; the policies
# may be replaced by a ConfigMap mounted at /policies. Relative defaults resolve from /.
WORKDIR /
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["/portcullis", "serve"]
CMD ["--listen", "0.0.0.0:8443", "--policies", "/policies", "--tls-cert", "/certs/tls.crt", "--tls-key", "/certs/tls.key"]
