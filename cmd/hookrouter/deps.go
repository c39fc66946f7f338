package main

// Temporary: pins the design's libraries in go.mod while the packages that use
// them are written. Removed once every import is real.
import (
	_ "github.com/cespare/xxhash/v2"
	_ "github.com/dgraph-io/ristretto/v2"
	_ "github.com/expr-lang/expr"
	_ "github.com/fsnotify/fsnotify"
	_ "github.com/nats-io/nats.go/jetstream"
	_ "github.com/prometheus/client_golang/prometheus/promhttp"
	_ "github.com/redis/go-redis/v9"
	_ "github.com/sony/gobreaker/v2"
	_ "github.com/valyala/fasthttp"
	_ "github.com/valyala/fastjson"
	_ "go.etcd.io/bbolt"
	_ "go.uber.org/goleak"
	_ "gopkg.in/yaml.v3"
)

func main() {}
