# Builds the keysmith controller manager into a distroless, non-root image:
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

# Then the sources the manager is built from.
COPY api/ api/
COPY cmd/ cmd/
COPY controllers/ controllers/
COPY internal/ internal/

RUN CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags="-s -w" -o manager ./cmd/manager

# Runtime stage: static binary on distroless, running as the image's "nonroot" user. The
# numeric UID lets Kubernetes verify runAsNonRoot.
FROM gcr.io/distroless/static:nonroot
WORKDIR /
COPY --from=builder /workspace/manager /manager
USER 65532:65532

ENTRYPOINT ["/manager"]
