// Package router is hookrouter's pipeline, one file per stage:
//
//	ingress.go   fasthttp handler: route by path, method, size, auth (auth/)
//	             → parse and extract fields, dedup key (rules/)
//	             → claim the key (dedup/) → match rules (rules/)
//	             → enqueue one delivery per chosen sink (queue/), durably
//	             → commit the key, answer 200 OK (or release it, answer 503)
//	dispatch/    per-sink lanes take deliveries, send with retry, backoff and a
//	             circuit breaker, dead-letter what cannot be delivered
//	runtime.go   the immutable compiled config (rules, sources, sinks) that
//	             ingress reads through an atomic pointer
//	reload.go    file watch, SIGHUP and POST /-/reload: validate, build, swap
//	admin.go     the admin listener's route table (admin/: access rules,
//	             token guard): /health, /metrics, /-/reload, /-/replay, pprof
package router
