# Builds the keysmith controller manager and token server into one distroless, non-root
# image (config/ runs /manager and /token-server from it):
#   docker build -t keysmith:latest .

# Build stage. The binary is pure Go (CGO_ENABLED=0) and is compiled for TARGETOS/TARGETARCH,
# which BuildKit sets from --platform (default linux and the builder's architecture).
FROM golang:1.26 AS builder
ARG TARGETOS
ARG TARGETARCH
# Use the image's Go release; never download a toolchain named by go.mod.
ENV GOTOOLCHAIN=local

WORKDIR /workspace
# Dependencies first, in their own layer, so it stays cached until go.mod/go.sum change.
COPY go.mod go.sum ./
RUN go mod download

# Then the sources the binaries are built from.
COPY api/ api/
COPY cmd/ cmd/
COPY controllers/ controllers/
COPY internal/ internal/

RUN CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags="-s -w" -o manager ./cmd/manager && \
    CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags="-s -w" -o token-server ./cmd/token-server

# Runtime stage: static binary on distroless, running as the image's "nonroot" user. The
# numeric UID lets Kubernetes verify runAsNonRoot.
FROM gcr.io/distroless/static:nonroot
WORKDIR /
COPY --from=builder /workspace/manager /manager
COPY --from=builder /workspace/token-server /token-server
USER 65532:65532

ENTRYPOINT ["/manager"]
