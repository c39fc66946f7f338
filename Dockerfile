# Build a static hookrouter binary, then run it as a non-root user on a
# minimal base. The config is read from /etc/hookrouter/rules.yaml (mount
# yours there); data (queue, dead letters) lives in /var/lib/hookrouter.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/hookrouter ./cmd/hookrouter \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/hookrouter /usr/local/bin/hookrouter
COPY rules.example.yaml /etc/hookrouter/rules.yaml
COPY --from=build --chown=nonroot:nonroot /out/data /var/lib/hookrouter
WORKDIR /var/lib/hookrouter
ENV HOOKROUTER_CONFIG=/etc/hookrouter/rules.yaml
USER nonroot:nonroot
EXPOSE 3000
VOLUME ["/var/lib/hookrouter"]
ENTRYPOINT ["/usr/local/bin/hookrouter"]
CMD ["serve"]
