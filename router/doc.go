// Package router is hookrouter's pipeline. A request meets the stages in
// this order, a file each (or a package):
//
//	ingress.go   the fasthttp handler: route by path, method, draining; runs
//	             the stages below in order and answers (200, 4xx, 503)
//	access.go    the source's allow_ips (403); then header auth (auth/,
//	             401), then its rate_limit (429)
//	body.go      read the body, at most max_body_bytes (413, 408, 400);
//	             then auth that signs the body (auth/: hmac, 401)
//	rules/       parse the JSON, compute the dedup key, match the rules
//	claim.go     claim the dedup key (dedup/); commit it once the event is
//	             queued, or release it (503)
//	queue/       enqueue one delivery per chosen sink, durably
//	dispatch/    per-sink lanes take deliveries, send with retry, backoff and
//	             a circuit breaker, dead-letter what cannot be delivered
//
// The other files are not stages:
//
//	router.go       New, Serve, Shutdown: opening and closing the queue, the
//	                dedup store, the journal and the listeners
//	runtime.go      the immutable compiled config (rules, sources, sinks and
//	                their metric handles) that ingress reads through an
//	                atomic pointer; sinkbuild.go builds its sinks
//	reload.go       file watch, SIGHUP and POST /-/reload: validate, build,
//	                provision, swap
//	journaling.go   what ingress records in the journal (journal/);
//	                journalreplay.go re-queues a journaled event
//	admin.go        the admin listener's route table (admin/: access rules,
//	                token guard): /health, /metrics, /-/reload, /-/replay,
//	                pprof; health.go says why ingress refuses events,
//	                console.go serves the console (console/)
//	dryrun.go       `hookrouter test`'s dry run (dryrun/), explain.go its
//	                -explain
//	surface.go      warnings about sources anyone can send to
//	eventid.go      event ids
package router
