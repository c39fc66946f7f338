#!/usr/bin/env bash
# run.sh — compare hookrouter's ingress and end-to-end throughput with a bare
# fasthttp server on this machine, in alternating rounds, and print a table.
#
#   benchmarks/run.sh                      # 3 rounds x 4 modes x 10 s, c=64
#   ROUNDS=5 DURATION=20 CONC=128 benchmarks/run.sh
#   MODES="bare" benchmarks/run.sh         # only some modes
#
# Environment (defaults in brackets):
#   ROUNDS [3]        rounds; each runs every mode once, modes alternate
#   DURATION [10]     seconds of measured load per run
#   WARMUP [2]        seconds of unmeasured load before each run
#   CONC [64]         loadgen connections
#   DUP [0.05]        fraction of requests re-sending an earlier event
#   MODES ["bare memory disk e2e"]; also memory-nj and disk-nj: the same
#                     with the journal off, for the journal's cost in one run
#                     (MODES="bare memory memory-nj disk disk-nj"); and one
#                     end-to-end mode per broker and database sink,
#                     e2e-postgres e2e-mysql e2e-nats e2e-amqp e2e-redis
#                     e2e-mqtt e2e-kafka, delivering into the machine's server
#                     (Kafka: an in-process kfake cluster) and counted there by
#                     benchmarks/readback; MODES=sinks is "bare e2e" and all seven
#   SINK_WORKERS [16] workers of the broker and database sinks (each takes
#                     batches of up to 64 deliveries)
#   JOURNAL [on]      on|off: the journal of the memory, disk and e2e modes
#                     (on is hookrouter's default; -nj modes are always off)
#   RATE_FRACTION [0.5]  fixed-rate latency runs at this fraction of bare's median
#                        throughput (0 skips them)
#   PIN [0]           1: server on CPU 0, loadgen on CPU 1 (taskset); less noise,
#                     but the server gets one core
#   KEEP [0]          1: keep the temp dir (configs, logs, JSON results)
#   HEALTH_TIMEOUT [20]  seconds to wait for hookrouter's /health
#   HOOKROUTER []     a prebuilt hookrouter binary to use instead of building
#                     ./cmd/hookrouter (e.g. to compare two commits)
#
# Exit status: 0 if every run got only 2xx answers and every end-to-end event
# was delivered; 1 otherwise (the table is still printed).
set -uo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONC=${CONC:-64}
DUP=${DUP:-0.05}
MODES=${MODES:-bare memory disk e2e}
sink_modes="e2e-postgres e2e-mysql e2e-nats e2e-amqp e2e-redis e2e-mqtt e2e-kafka"
[[ $MODES == sinks ]] && MODES="bare e2e $sink_modes"
SINK_WORKERS=${SINK_WORKERS:-16}
JOURNAL=${JOURNAL:-on}
case $JOURNAL in
on) journal_enabled=true ;;
off) journal_enabled=false ;;
*)
	echo "run.sh: JOURNAL=$JOURNAL: want on or off" >&2
	exit 2
	;;
esac
RATE_FRACTION=${RATE_FRACTION:-0.5}
PIN=${PIN:-0}
KEEP=${KEEP:-0}
HEALTH_TIMEOUT=${HEALTH_TIMEOUT:-20}
SECRET=bench-secret-$$

for tool in go jq curl; do
	if ! command -v "$tool" >/dev/null; then
		echo "run.sh needs $tool (Debian: apt-get install $tool)" >&2
		exit 1
	fi
done

root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/hookrouter-bench.XXXXXX")
bin=$tmp/bin
res=$tmp/results
mkdir -p "$bin" "$res"

pids=()
failures=()

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
fail() { failures+=("$*"); log "FAIL: $*"; }

# stop_pid ends one process this script started: TERM, then KILL after 10 s.
stop_pid() {
	local pid=$1 i
	kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	return 0
}

cleanup() {
	local pid
	for pid in "${pids[@]}"; do stop_pid "$pid"; done
	if [[ $KEEP == 1 ]]; then
		log "kept $tmp"
	else
		rm -rf "$tmp"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

server_cpu=() loadgen_cpu=()
if [[ $PIN == 1 ]]; then
	server_cpu=(taskset -c 0)
	loadgen_cpu=(taskset -c 1)
fi

# free_port prints a TCP port no socket on this machine uses, below the
# kernel's ephemeral range: the load's own connections take their local
# ports from that range, and a port one of them holds cannot be listened on.
# Racy by nature; a server that then fails to bind is reported as not
# coming up.
free_port() {
	local p i lo=32768 hi base
	read -r lo hi </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null
	base=$((lo > 12000 ? 10000 : 1024))
	for ((i = 0; i < 200; i++)); do
		p=$((base + RANDOM % (lo - base)))
		if [[ -z $(ss -Htan "sport = :$p" 2>/dev/null) ]]; then
			echo "$p"
			return 0
		fi
	done
	return 1
}

# wait_file waits up to $2 seconds for file $1 to be non-empty, while process
# $3 lives.
wait_file() {
	local f=$1 secs=$2 pid=$3 i
	for ((i = 0; i < secs * 10; i++)); do
		[[ -s $f ]] && return 0
		kill -0 "$pid" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# ---------------------------------------------------------------- build
log "building into $bin"
for tool in bare capture loadgen readback; do
	if ! (cd "$root" && go build -o "$bin/$tool" "./benchmarks/$tool"); then
		log "cannot build benchmarks/$tool"
		exit 1
	fi
done
have_router=1
router_modes=$(echo " $MODES " | sed 's/ bare / /g; s/^ *//; s/ *$//')
if [[ -n ${HOOKROUTER:-} ]]; then
	# A prebuilt binary, e.g. to compare two commits' builds.
	if [[ ! -x $HOOKROUTER ]]; then
		fail "HOOKROUTER=$HOOKROUTER is not an executable: ${router_modes:-no} runs skipped"
		have_router=0
	else
		cp "$HOOKROUTER" "$bin/hookrouter"
	fi
elif [[ -n $router_modes ]] && ! (cd "$root" && go build -o "$bin/hookrouter" ./cmd/hookrouter) 2>"$tmp/build-hookrouter.log"; then
	have_router=0
	sed 's/^/    /' "$tmp/build-hookrouter.log" | head -20 >&2
	fail "hookrouter does not build: $router_modes runs skipped"
fi

# ---------------------------------------------------------------- configs
# write_config FILE PORT DATA_DIR BACKEND SINK_YAML JOURNAL_ENABLED
write_config() {
	local file=$1 port=$2 data=$3 backend=$4 sink=$5 journal=$6
	cat >"$file" <<EOF
# Generated by benchmarks/run.sh: the platform's common use-cases, every
# routed event ending up in the one sink "archive" (once, rules union).
listen: "127.0.0.1:$port"
admin_listen: "127.0.0.1:0"   # a free port: runs on one machine must not collide on 3001
sources:
  - name: platform
    path: /webhook
    auth:
      type: header
      secret: \${WEBHOOK_SECRET_KEY}
    dedup:
      ttl: 1h
data_dir: $data
queue:
  backend: $backend
  max_bytes: 2GiB
journal:
  enabled: $journal
sinks:
  archive:
$sink
rules:
  - name: archive-everything
    when: "true"
    to: [archive]
  - name: drop-load-tests
    when: header("X-Load-Test") == "1"
    to: []
    stop: true
  - name: whatsapp-inbound
    when: event == "channel.message_in" && message.channel.engine == "wa"
    to: [archive]
  - name: needs-human
    when: event == "channel.message_in" && need_human == 1
    to: [archive]
  - name: image-attachments
    when: event == "channel.message_in" && message?.content?.type == "image"
    to: [archive]
  - name: complaints
    when: event == "channel.message_in" && (lower(message?.content?.text ?? "") contains "komplain" || lower(message?.content?.text ?? "") contains "refund")
    to: [archive]
  - name: agent-replies
    when: event == "agent.message_out" && message?.channel?.engine in ["wa", "ig", "fb", "tg"]
    to: [archive]
  - name: ai-drafts
    when: event == "ai.message_generated"
    to: [archive]
  - name: device-offline
    when: event == "device.disconnected" || (event == "device.connected" && device?.status != "connected")
    to: [archive]
  - name: vip-candidate
    when: message?.bisnis?.id in ["biz_1", "biz_2"]
    to: [archive]
    shadow: true
EOF
}

file_sink() {
	cat <<EOF
    type: file
    path: $1/events.jsonl
    format: payload
EOF
}

# The http sink gets as many workers as loadgen has connections: a worker
# waits for each response, so with fewer the sink's throughput is bounded by
# workers / round trip. With 16 the queue grew while the load lasted
# (deliveries ran at a third to three quarters of the accepted rate) and
# drained after it; delivered/s came out about the same, but a run whose
# delivery keeps up with ingress shows the rate the pipeline sustains.
http_sink() {
	cat <<EOF
    type: http
    url: http://$1/events
    timeout: 5s
    workers: $((CONC < 256 ? CONC : 256))
EOF
}

# The broker and database sinks, each into a destination of its own that
# benchmarks/readback made empty ($3: a table, stream, exchange and queue,
# topic prefix or topic named after the run).
db_sink() {
	cat <<EOF
    type: $1
    dsn: "$2"
    table: $3
    create_table: true
    workers: $SINK_WORKERS
EOF
}
broker_sink() {
	local kind=$1 target=$2
	echo "    type: $kind"
	case $kind in
	nats) printf '    url: nats://127.0.0.1:4222\n    subject: %s\n    jetstream: true\n' "'$target.{{ .event }}'" ;;
	amqp) printf '    url: amqp://guest:guest@127.0.0.1:5672/\n    exchange: %s\n    routing_key: %s\n' "$target" "'{{ .event }}'" ;;
	redis) printf '    url: redis://127.0.0.1:6379/0\n    stream: %s\n' "$target" ;;
	mqtt) printf '    url: tcp://127.0.0.1:1883\n    topic: %s\n' "'$target/{{ .event }}'" ;;
	kafka) printf '    brokers: ["%s"]\n    topic: %s\n    key: %s\n' "$3" "$target" "'{{ .event }}'" ;;
	esac
	echo "    workers: $SINK_WORKERS"
}

# ---------------------------------------------------------------- servers
# Each start_* sets srv_pid and srv_url (and cap_pid/cap_url for the capture
# sink) or returns 1.
srv_pid="" srv_url="" cap_pid="" cap_url=""

start_bare() {
	local dir=$1
	"${server_cpu[@]}" "$bin/bare" -addr 127.0.0.1:0 -addr-file "$dir/addr" -secret "$SECRET" 2>"$dir/server.log" &
	srv_pid=$!
	pids+=("$srv_pid")
	if ! wait_file "$dir/addr" 10 "$srv_pid"; then
		log "bare did not start:"
		tail -5 "$dir/server.log" >&2
		return 1
	fi
	srv_url="http://$(cat "$dir/addr")/webhook"
}

start_capture() {
	local dir=$1
	"${server_cpu[@]}" "$bin/capture" -addr 127.0.0.1:0 -addr-file "$dir/capture.addr" -check 2>"$dir/capture.log" &
	cap_pid=$!
	pids+=("$cap_pid")
	if ! wait_file "$dir/capture.addr" 10 "$cap_pid"; then
		log "capture did not start:"
		tail -5 "$dir/capture.log" >&2
		return 1
	fi
	cap_url="http://$(cat "$dir/capture.addr")"
}

# start_readback DIR KIND TARGET: benchmarks/readback counting what reaches
# the destination; like the capture server it sets cap_pid and cap_url.
start_readback() {
	local dir=$1 kind=$2 target=$3
	"${server_cpu[@]}" "$bin/readback" -kind "$kind" -target "$target" -addr 127.0.0.1:0 -addr-file "$dir/capture.addr" \
		-broker-file "$dir/kafka.addr" 2>"$dir/readback.log" &
	cap_pid=$!
	pids+=("$cap_pid")
	if ! wait_file "$dir/capture.addr" 40 "$cap_pid"; then
		log "readback ($kind) did not start:"
		tail -5 "$dir/readback.log" >&2
		return 1
	fi
	cap_url="http://$(cat "$dir/capture.addr")"
}

# start_router DIR BACKEND SINK_YAML [JOURNAL_ENABLED]
start_router() {
	local dir=$1 backend=$2 sink=$3 journal=${4:-$journal_enabled} port i code
	port=$(free_port) || { log "no free port"; return 1; }
	mkdir -p "$dir/data"
	write_config "$dir/rules.yaml" "$port" "$dir/data" "$backend" "$sink" "$journal"
	PORT=$port WEBHOOK_SECRET_KEY=$SECRET "${server_cpu[@]}" "$bin/hookrouter" serve -config "$dir/rules.yaml" \
		>"$dir/server.log" 2>&1 &
	srv_pid=$!
	pids+=("$srv_pid")
	for ((i = 0; i < HEALTH_TIMEOUT * 10; i++)); do
		if ! kill -0 "$srv_pid" 2>/dev/null; then
			log "hookrouter exited before answering /health; its log ($dir/server.log, KEEP=1 keeps it):"
			tail -20 "$dir/server.log" | sed 's/^/    /' >&2
			return 1
		fi
		code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$port/health" 2>/dev/null)
		if [[ $code == 200 ]]; then
			srv_url="http://127.0.0.1:$port/webhook"
			return 0
		fi
		sleep 0.1
	done
	log "hookrouter did not answer 200 on http://127.0.0.1:$port/health within ${HEALTH_TIMEOUT}s (last: ${code:-none}); its log:"
	tail -20 "$dir/server.log" | sed 's/^/    /' >&2
	return 1
}

# start_sink_run DIR KIND TARGET: readback on a fresh destination, then
# hookrouter with a sink of type KIND delivering into it.
start_sink_run() {
	local dir=$1 kind=$2 target=$3
	start_readback "$dir" "$kind" "$target" || return 1
	case $kind in
	postgres) start_router "$dir" memory "$(db_sink postgres "postgres://postgres@127.0.0.1:5432/test?sslmode=disable" "$target")" ;;
	mysql) start_router "$dir" memory "$(db_sink mysql "root@tcp(127.0.0.1:3306)/test" "$target")" ;;
	*) start_router "$dir" memory "$(broker_sink "$kind" "$target" "$(cat "$dir/kafka.addr" 2>/dev/null)")" ;;
	esac
}

# ---------------------------------------------------------------- one run
# run_one MODE ROUND [RATE LABEL]: start the server(s), load them, record the
# result in $res/MODE.ROUND.json (fixed rate: MODE.LABEL.json) and the
# server's RSS.
run_one() {
	local mode=$1 round=$2 rate=${3:-0} name dir out rc sinks=()
	name=$mode.$round
	[[ $rate != 0 ]] && name=$mode.${4:-rate}
	dir=$tmp/run-$name
	mkdir -p "$dir"
	out=$res/$name.json
	srv_pid="" cap_pid=""

	case $mode in
	bare) start_bare "$dir" ;;
	memory) start_router "$dir" memory "$(file_sink "$dir/data")" ;;
	disk) start_router "$dir" disk "$(file_sink "$dir/data")" ;;
	memory-nj) start_router "$dir" memory "$(file_sink "$dir/data")" false ;;
	disk-nj) start_router "$dir" disk "$(file_sink "$dir/data")" false ;;
	e2e) start_capture "$dir" && start_router "$dir" memory "$(http_sink "${cap_url#http://}")" && sinks=(-sinks "$cap_url") ;;
	e2e-*) start_sink_run "$dir" "${mode#e2e-}" "hrbench_$$_${name//[.-]/_}" && sinks=(-sinks "$cap_url") ;;
	*) false ;;
	esac
	rc=$?
	if [[ $rc != 0 ]]; then
		fail "$name: server did not start"
		[[ -n $srv_pid ]] && stop_pid "$srv_pid"
		[[ -n $cap_pid ]] && stop_pid "$cap_pid"
		return 1
	fi

	log "$name: loading $srv_url for ${DURATION}s (c=$CONC, rate=$rate)"
	"${loadgen_cpu[@]}" "$bin/loadgen" -url "$srv_url" -secret "$SECRET" -c "$CONC" -d "${DURATION}s" \
		-warmup "${WARMUP}s" -dup "$DUP" -rate "$rate" -seed "$round" -json -server-pid "$srv_pid" "${sinks[@]}" \
		>"$out" 2>"$dir/loadgen.log"
	rc=$?
	local rss hwm journal_stats admin
	rss=$(rss_kib "$srv_pid")
	hwm=$(hwm_kib "$srv_pid")
	# The journal's own counters (records written and dropped), from the
	# admin /health whose address the server logged: the journal keeps to
	# its CPU share by dropping, and the table says how much it kept.
	journal_stats=null
	admin=$(jq -r 'select(.msg == "hookrouter started") | .admin_listen // empty' "$dir/server.log" 2>/dev/null | head -1)
	if [[ -n $admin ]]; then
		journal_stats=$(curl -s --max-time 5 "http://$admin/health" | jq -c '.journal // null' 2>/dev/null)
		[[ -n $journal_stats ]] || journal_stats=null
	fi
	stop_pid "$srv_pid"
	[[ -n $cap_pid ]] && stop_pid "$cap_pid"

	if [[ ! -s $out ]] || ! jq -e . "$out" >/dev/null 2>&1; then
		fail "$name: loadgen failed (exit $rc): $(tail -3 "$dir/loadgen.log")"
		return 1
	fi
	# Annotate the result with the server's memory, for the table.
	jq --argjson rss "${rss:-0}" --argjson hwm "${hwm:-0}" --argjson journal "$journal_stats" \
		'. + {server_rss_kib: $rss, server_hwm_kib: $hwm, journal: $journal}' \
		"$out" >"$out.tmp" && mv "$out.tmp" "$out"
	if [[ $rc != 0 ]]; then
		fail "$name: $(jq -r '"\(.non2xx_total) non-2xx \(.non2xx), \(.errors_total) errors \(.errors), \(.unsent // 0) never sent"' "$out")"
	fi
	if [[ $mode == e2e* ]]; then
		local want got invalid
		want=$(jq '.unique_accepted' "$out")
		got=$(jq '.sinks[0].delivered // 0' "$out")
		invalid=$(jq '.sinks[0].invalid // 0' "$out")
		((got < want)) && fail "$name: the destination got $got of $want accepted events"
		((invalid > 0)) && fail "$name: capture sink got $invalid bodies that are not JSON"
	fi
	rm -rf "$dir/data" # file sinks and queues are large; logs stay for KEEP=1
	return 0
}

# ---------------------------------------------------------------- rounds
for ((r = 1; r <= ROUNDS; r++)); do
	for mode in $MODES; do
		[[ $mode != bare && $have_router == 0 ]] && continue
		run_one "$mode" "$r"
	done
done

# median MODE JQ_EXPR: the median over rounds of a number in the results.
median() {
	local files=("$res/$1".[0-9]*.json)
	[[ -e ${files[0]} ]] || { echo ""; return; }
	jq -s "[.[] | ($2)] | sort | if length == 0 then null elif length % 2 == 1 then .[length/2|floor] else (.[length/2-1] + .[length/2]) / 2 end" "${files[@]}"
}

missing() { [[ -z $1 || $1 == null ]]; }
fmt_num() { if missing "$1"; then echo "-"; else printf '%.0f' "$1"; fi; }
fmt_ms() { if missing "$1"; then echo "-"; else awk -v u="$1" 'BEGIN { printf "%.2f", u / 1000 }'; fi; }
fmt_ratio() { if missing "$1" || missing "$2" || [[ $2 == 0 ]]; then echo "-"; else awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; fi; }
fmt_us() { if missing "$1"; then echo "-"; else printf '%.1f' "$1"; fi; }
fmt_mib() { if missing "$1" || [[ $1 == 0 ]]; then echo "-"; else awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; fi; }

bare_tp=$(median bare '.accepted_per_s')

# ---------------------------------------------------------------- fixed rate
rate=0
if [[ -n $bare_tp && $bare_tp != null && $RATE_FRACTION != 0 ]]; then
	rate=$(awk -v t="$bare_tp" -v f="$RATE_FRACTION" 'BEGIN { printf "%.0f", t * f }')
	for mode in bare memory disk; do
		[[ " $MODES " == *" $mode "* ]] || continue
		[[ $mode != bare && $have_router == 0 ]] && continue
		run_one "$mode" 0 "$rate" rate
		# The common rate can exceed what hookrouter sustains, and then the
		# run shows queueing, not latency: also run at the same fraction of
		# the mode's own throughput, i.e. at equal utilisation.
		[[ $mode == bare ]] && continue
		own=$(median "$mode" '.accepted_per_s')
		missing "$own" && continue
		own=$(awk -v t="$own" -v f="$RATE_FRACTION" 'BEGIN { printf "%.0f", t * f }')
		((own > 0)) && run_one "$mode" 0 "$own" own
	done
fi

# ---------------------------------------------------------------- table
{
	echo
	echo "hookrouter benchmark: $(nproc) CPUs, $ROUNDS round(s) x ${DURATION}s, c=$CONC, dup=$DUP, $(go version | awk '{print $3}'), medians over rounds"
	printf '%-12s %12s %9s %9s %8s %7s %13s %9s %8s %8s %8s\n' mode "accepted/s" "p50 ms" "p99 ms" non-2xx errors "delivered/s" "vs bare" "RSS MiB" "srv us" "gen us"
	for mode in $MODES; do
		[[ -e $res/$mode.1.json ]] || { printf '%-12s %12s\n' "$mode" "(no result)"; continue; }
		tp=$(median "$mode" '.accepted_per_s')
		deliv="-"
		ratio=$(fmt_ratio "$tp" "$bare_tp")
		if [[ $mode == e2e* ]]; then
			d=$(median "$mode" '.sinks[0].delivered_per_s // 0')
			deliv=$(fmt_num "$d")
			ratio=$(fmt_ratio "$d" "$bare_tp")
		fi
		printf '%-12s %12s %9s %9s %8s %7s %13s %9s %8s %8s %8s\n' "$mode" "$(fmt_num "$tp")" \
			"$(fmt_ms "$(median "$mode" '.latency_us.p50')")" "$(fmt_ms "$(median "$mode" '.latency_us.p99')")" \
			"$(jq -s 'map(.non2xx_total) | add' "$res/$mode".[0-9]*.json)" \
			"$(jq -s 'map(.errors_total) | add' "$res/$mode".[0-9]*.json)" \
			"$deliv" "$ratio" "$(fmt_mib "$(median "$mode" '.server_rss_kib')")" \
			"$(fmt_us "$(median "$mode" '.cpu_us_per_request.server')")" "$(fmt_us "$(median "$mode" '.cpu_us_per_request.loadgen')")"
	done
	echo "  accepted/s: 2xx answers per second; vs bare: accepted/s (e2e: delivered/s) over bare's accepted/s;"
	echo "  delivered/s: distinct events the capture sink acknowledged (e2e-KIND: read back at the destination)"
	echo "  / time from load start to the last delivery;"
	echo "  non-2xx, errors: totals over all rounds; RSS: server's resident memory at the end of the run;"
	echo "  srv us, gen us: CPU time (µs) of the server (e2e: hookrouter, not the capture sink) and of loadgen"
	echo "  per request of the measured phase: what each request costs, which the ratios blur on shared cores."
	for b in memory disk; do
		[[ -e $res/$b.1.json && -e $res/$b-nj.1.json ]] || continue
		on=$(median "$b" '.accepted_per_s')
		off=$(median "$b-nj" '.accepted_per_s')
		echo "  journal cost, $b: accepted/s with the journal (JOURNAL=$JOURNAL) / without = $(fmt_ratio "$on" "$off")" \
			"(want >= 0.85); srv us $(fmt_us "$(median "$b" '.cpu_us_per_request.server')") vs $(fmt_us "$(median "$b-nj" '.cpu_us_per_request.server')")"
		# Each round's pair ran one after the other: their ratios show how
		# much of the difference is the machine drifting between rounds.
		per_round=""
		for ((r = 1; r <= ROUNDS; r++)); do
			[[ -e $res/$b.$r.json && -e $res/$b-nj.$r.json ]] || continue
			per_round+=" $(fmt_ratio "$(jq '.accepted_per_s' "$res/$b.$r.json")" "$(jq '.accepted_per_s' "$res/$b-nj.$r.json")")"
		done
		echo "  journal cost, $b, round by round:$per_round"
		kept=$(median "$b" 'if .journal then .journal.written / ((.journal.written + .journal.dropped) | if . == 0 then 1 else . end) else null end')
		missing "$kept" || echo "  journal kept, $b: $(awk -v k="$kept" 'BEGIN { printf "%.0f", k * 100 }')% of its records at this load (the rest dropped and counted: it keeps to 15% of a core)"
	done
	if [[ $rate != 0 ]]; then
		echo
		echo "fixed rate, open loop, latency from the intended send time (ms); rate = ${RATE_FRACTION} x bare's, or x the mode's own (own):"
		printf '%-12s %8s %10s %8s %8s %8s %8s %8s %11s %8s\n' mode "rate/s" "achieved/s" p50 p90 p99 p99.9 max "on sched." "RSS MiB"
		for name in bare.rate memory.rate memory.own disk.rate disk.own; do
			f=$res/$name.json
			[[ -e $f ]] || continue
			read -r want ach p50 p90 p99 p999 mx sched rss < <(jq -r '[.rate, .accepted_per_s, .latency_us.p50, .latency_us.p90, .latency_us.p99, .latency_us.p99_9, .latency_us.max, (.on_schedule // 0), (.server_rss_kib // 0)] | @tsv' "$f")
			printf '%-12s %8s %10s %8s %8s %8s %8s %8s %10s%% %8s\n' "${name%.rate}" "$(fmt_num "$want")" "$(fmt_num "$ach")" \
				"$(fmt_ms "$p50")" "$(fmt_ms "$p90")" "$(fmt_ms "$p99")" "$(fmt_ms "$p999")" "$(fmt_ms "$mx")" \
				"$(awk -v s="$sched" 'BEGIN { printf "%.1f", s * 100 }')" "$(fmt_mib "$rss")"
		done
		echo "  achieved/s below rate/s, or on sched. well under 100%, means the server could not keep up:"
		echo "  the latency then is mostly time queued behind earlier requests."
	fi
	if ((${#failures[@]} > 0)); then
		echo
		echo "FAILED:"
		printf '  %s\n' "${failures[@]}"
	fi
}

((${#failures[@]} == 0))
