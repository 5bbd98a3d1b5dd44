#!/usr/bin/env bash
# bench/compare.sh: Postfix and jetrelay side by side, on loopback only.
#
# Installs Postfix from the Debian packages (if missing), configures it as
# a loopback relay to a bench sink, builds and starts `jetrelay serve`, runs
# the same cases against both with `jetrelay bench` (RUNS times each,
# alternating which relay goes first), appends every result as a JSON line
# to bench/results/<stamp>.jsonl and prints a Markdown table of the medians
# with jetrelay/Postfix ratios (also written to bench/results/<stamp>.md).
# Everything it starts is stopped at the end (trap): jetrelay by its PID,
# Postfix with `postfix stop`; a main.cf/master.cf that was there before is
# restored. See BENCHMARKS.md.
#
# Needs root (apt-get, postfix). Settings (environment):
#   RUNS=3                  runs of every case and relay (the table shows medians)
#   CASES="1k 100k 10m rcpt10 mem25m"
#   CONC=20                 concurrent SMTP sessions of the load client
#   PER_CONN=1              messages per SMTP session (0: sessions last the run)
#   N_1K=15000 N_100K=6000 N_10M=200 N_RCPT10=10000   messages per case
#   SCALE_PCT=100           scale every N (e.g. 10 for a quick smoke run)
#   TIMEOUT=5m              limit of each bench run
#   RELAYS="postfix jetrelay"
#   WORK=/var/tmp/jetrelay-bench   jetrelay binary, config, data and logs
#   SKIP_INSTALL=0          1: do not apt-get (Postfix must be installed)
#   POSTFIX_LOG=0           1: Postfix logs to $WORK/postfix.log (costs a little)
#   BENCH_ARGS=""           extra flags for every `jetrelay bench` run (e.g. --no-pss)
#   VARIANTS="s4"           jetrelay set-ups, each a relay of its own in the table
#                           (label jetrelay-<variant>): sN = `serve` with
#                           broker.queue_shards N; r3 = a 3-node JetStream cluster
#                           on loopback (R3) with `jetrelay ingress` and
#                           `jetrelay delivery` processes; a suffix +gcN sets GOGC,
#                           +memSIZE sets memory_limit (e.g. s4+gc100+mem512MiB)
#   FLUSH_RUNS=1            after the timed rounds, this many runs per case and
#                           relay traced with strace (`jetrelay bench --count-flushes`):
#                           disk flushes per message, in a table of their own (0: none)
#   LOADGEN=bench           bench: `jetrelay bench` sends and receives (the default);
#                           smtp-source: Postfix's own smtp-source sends, as in the
#                           issue's reference figures, and `jetrelay bench --sink-only`
#                           receives and measures the relay (cases 1k, 100k, 10m only)
set -euo pipefail

RUNS=${RUNS:-3}
CASES=${CASES:-"1k 100k 10m rcpt10 mem25m"}
CONC=${CONC:-20}
PER_CONN=${PER_CONN:-1}
N_1K=${N_1K:-15000}
N_100K=${N_100K:-6000}
N_10M=${N_10M:-200}
N_RCPT10=${N_RCPT10:-10000}
SCALE_PCT=${SCALE_PCT:-100}
TIMEOUT=${TIMEOUT:-5m}
RELAYS=${RELAYS:-"postfix jetrelay"}
WORK=${WORK:-/var/tmp/jetrelay-bench}
SKIP_INSTALL=${SKIP_INSTALL:-0}
POSTFIX_LOG=${POSTFIX_LOG:-0}
BENCH_ARGS=${BENCH_ARGS:-}
LOADGEN=${LOADGEN:-bench}
VARIANTS=${VARIANTS:-s4}
FLUSH_RUNS=${FLUSH_RUNS:-1}

# Loopback only.
POSTFIX_LISTEN=127.0.0.1:2526
POSTFIX_SINK=127.0.0.1:2626
JETRELAY_LISTEN=127.0.0.1:2525
JETRELAY_SINK=127.0.0.1:2627
R3_CLIENT=4320 # broker nodes of the r3 variant: 4321-4323, routes 6321-6323
R3_ROUTE=6320

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RESULTS=$ROOT/bench/results
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$RESULTS/$STAMP.jsonl
REPORT=$RESULTS/$STAMP.md
LOG=$WORK/compare.log
JR=$WORK/jetrelay
MARK="# jetrelay bench/compare.sh"
T0=$(date +%s)

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" | tee -a "$LOG" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (apt-get, postfix)"
case $RUNS in ''|*[!0-9]*) die "RUNS must be a number";; esac
[ "$RUNS" -ge 1 ] && [ "$RUNS" -le 20 ] || die "RUNS: 1 to 20"
mkdir -p "$WORK" "$RESULTS"
: >"$LOG"

port_busy() { ss -Hltn "sport = :${1##*:}" 2>/dev/null | grep -q .; }

# wait_port ADDR SECONDS: until something listens on ADDR (bounded).
wait_port() {
	local i
	for ((i = 0; i < $2 * 10; i++)); do
		port_busy "$1" && return 0
		sleep 0.1
	done
	return 1
}

JPIDS=""
JVARIANT=""
# start_jetrelay VARIANT: a fresh jetrelay of that set-up on an empty store.
start_jetrelay() {
	local v=$1 shards=4 gc="" mem="" base i
	base=${v%%+*}
	case $base in
	s[0-9]*) shards=${base#s} ;;
	r3) ;;
	*) die "unknown variant $v" ;;
	esac
	case $v in *+gc*) gc=${v##*+gc}; gc=${gc%%+*} ;; esac
	case $v in *+mem*) mem=${v##*+mem}; mem=${mem%%+*} ;; esac
	rm -rf "$WORK/data"
	mkdir -p "$WORK/data"
	local common="hostname: jetrelay.bench.localdomain
broker:
  sync_interval: always
  queue_shards: $shards
delivery:
  smarthost: \"$JETRELAY_SINK\"
  smarthost_tls: none
http:
  listen: \"off\"
log:
  level: warn
  format: console
"
	[ -n "$mem" ] && common="${common}memory_limit: $mem
"
	local envs=()
	[ -n "$gc" ] && envs+=("GOGC=$gc")
	JPIDS=""
	JVARIANT=$v
	if [ "$base" != r3 ]; then
		printf '# written by bench/compare.sh (%s)\n%sdata_dir: %s\ningress:\n  listen: ["%s"]\n' "$v" "$common" "$WORK/data" "$JETRELAY_LISTEN" >"$WORK/jetrelay.yaml"
		log "starting jetrelay serve ($v) on $JETRELAY_LISTEN, smarthost $JETRELAY_SINK"
		env "${envs[@]}" "$JR" serve --config "$WORK/jetrelay.yaml" >>"$WORK/jetrelay.log" 2>&1 &
		JPIDS=$!
	else
		# Three broker nodes, replicas 3, then one ingress and one
		# delivery process connected to all three.
		local urls="" routes="" n
		for n in 1 2 3; do
			urls="$urls${urls:+, }nats://127.0.0.1:$((R3_CLIENT + n))"
			routes="$routes${routes:+, }nats://127.0.0.1:$((R3_ROUTE + n))"
		done
		local cl="${common/broker:/broker:
  url: [$urls]
  user: bench
  password: bench-password-not-secret
  replicas: 3}"
		for n in 1 2 3; do
			printf '# written by bench/compare.sh (r3 node %s)\n%sdata_dir: %s\n' "$n" \
				"${cl/broker:/broker:
  listen: 127.0.0.1:$((R3_CLIENT + n))
  server_name: n$n
  cluster:
    name: bench
    listen: 127.0.0.1:$((R3_ROUTE + n))
    routes: [$routes]}" "$WORK/data/n$n" >"$WORK/broker$n.yaml"
			env "${envs[@]}" "$JR" broker --config "$WORK/broker$n.yaml" >>"$WORK/jetrelay.log" 2>&1 &
			JPIDS="$JPIDS $!"
		done
		for n in 1 2 3; do wait_port "127.0.0.1:$((R3_CLIENT + n))" 60 || die "broker node $n does not listen (see $WORK/jetrelay.log)"; done
		printf '# written by bench/compare.sh (r3 stages)\n%sdata_dir: %s\ningress:\n  listen: ["%s"]\n' "$cl" "$WORK/data/stages" "$JETRELAY_LISTEN" >"$WORK/stages.yaml"
		env "${envs[@]}" "$JR" delivery --config "$WORK/stages.yaml" >>"$WORK/jetrelay.log" 2>&1 &
		JPIDS="$JPIDS $!"
		env "${envs[@]}" "$JR" ingress --config "$WORK/stages.yaml" >>"$WORK/jetrelay.log" 2>&1 &
		JPIDS="$JPIDS $!"
		log "started jetrelay r3 ($v): brokers on 127.0.0.1:$((R3_CLIENT + 1))-$((R3_CLIENT + 3)), ingress on $JETRELAY_LISTEN"
	fi
	wait_port "$JETRELAY_LISTEN" 120 || die "jetrelay does not listen on $JETRELAY_LISTEN (see $WORK/jetrelay.log)"
	log "jetrelay $v pids$JPIDS ($("$JR" version))"
}
stop_jetrelay() {
	local i p
	[ -n "$JPIDS" ] || return 0
	log "stopping jetrelay $JVARIANT (pids $JPIDS)"
	# Stages first, then the brokers (the last pids are the stages).
	for p in $(echo "$JPIDS" | awk '{for (i = NF; i > 0; i--) print $i}'); do
		kill -0 "$p" 2>/dev/null || continue
		kill -TERM "$p"
		for ((i = 0; i < 300; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		kill -0 "$p" 2>/dev/null && kill -KILL "$p"
		wait "$p" 2>/dev/null || true
	done
	JPIDS=""
	rm -rf "$WORK/data"
}
POSTFIX_STARTED=0
CREATED_MAIN=0
cleanup() {
	local rc=$?
	set +e
	stop_jetrelay
	if [ "$POSTFIX_STARTED" = 1 ]; then
		log "stopping postfix"
		postfix stop >>"$LOG" 2>&1
	fi
	for f in main.cf master.cf; do
		if [ -f "/etc/postfix/$f.bench-backup" ]; then
			mv -f "/etc/postfix/$f.bench-backup" "/etc/postfix/$f"
			log "restored /etc/postfix/$f"
		fi
	done
	if [ "$CREATED_MAIN" = 1 ]; then
		rm -f /etc/postfix/main.cf # there was none: Postfix stays unconfigured
	fi
	rm -rf "$WORK/data"
	log "done in $(($(date +%s) - T0))s (exit $rc)"
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

want_postfix=0
want_jetrelay=0
for r in $RELAYS; do
	case $r in
	postfix) want_postfix=1 ;;
	jetrelay) want_jetrelay=1 ;;
	*) die "unknown relay $r" ;;
	esac
done

for a in $POSTFIX_LISTEN $POSTFIX_SINK $JETRELAY_LISTEN $JETRELAY_SINK; do
	port_busy "$a" && die "$a is in use: stop what listens there first"
done

# ---- cases ------------------------------------------------------------------
scale() { local n=$(($1 * SCALE_PCT / 100)); [ "$n" -ge 1 ] && echo "$n" || echo 1; }

# case_args NAME: the bench flags of a case.
case_args() {
	case $1 in
	1k) echo "--count $(scale "$N_1K") --size 1KiB --rcpts 1 --concurrency $CONC --per-conn $PER_CONN" ;;
	100k) echo "--count $(scale "$N_100K") --size 100KiB --rcpts 1 --concurrency $CONC --per-conn $PER_CONN" ;;
	10m) echo "--count $(scale "$N_10M") --size 10MiB --rcpts 1 --concurrency $CONC --per-conn $PER_CONN" ;;
	rcpt10) echo "--count $(scale "$N_RCPT10") --size 1KiB --rcpts 10 --domains 2 --concurrency $CONC --per-conn $PER_CONN" ;;
	# One message just under the 25 MiB limit (26214400 bytes, which
	# jetrelay's ingress.max_message_bytes counts with its Received header).
	mem25m) echo "--count 1 --size 26213376 --rcpts 1 --concurrency 1 --per-conn 1" ;;
	*) return 1 ;;
	esac
}
for c in $CASES; do case_args "$c" >/dev/null || die "unknown case $c"; done

# source_len NAME: smtp-source's -l for the cases it can send (one
# recipient each): the body's bytes, the case's size less the 166 bytes of
# headers smtp-source adds of its own. It sends HELO, not EHLO, and waits
# for every reply (no PIPELINING), like many applications.
source_len() {
	case $1 in
	1k) echo 858 ;;
	100k) echo 102234 ;;
	10m) echo 10485594 ;;
	*) return 1 ;;
	esac
}
source_count() {
	case $1 in
	1k) scale "$N_1K" ;;
	100k) scale "$N_100K" ;;
	10m) scale "$N_10M" ;;
	esac
}
case $LOADGEN in
bench) ;;
smtp-source)
	command -v smtp-source >/dev/null || die "smtp-source is missing (it comes with the postfix package)"
	command -v jq >/dev/null || die "LOADGEN=smtp-source needs jq"
	[ "$PER_CONN" = 1 ] || die "LOADGEN=smtp-source sends one message per session (PER_CONN=1)"
	for c in $CASES; do source_len "$c" >/dev/null || die "LOADGEN=smtp-source: case $c has several recipients or sessions; use 1k, 100k, 10m"; done
	;;
*) die "LOADGEN: bench or smtp-source" ;;
esac

# ---- build jetrelay -------------------------------------------------------
log "building jetrelay"
(cd "$ROOT" && go build -o "$JR" ./cmd/jetrelay) || die "go build failed"

# ---- Postfix ----------------------------------------------------------------
if [ "$want_postfix" = 1 ]; then
	if ! command -v postfix >/dev/null || [ ! -x /usr/lib/postfix/sbin/master ]; then
		[ "$SKIP_INSTALL" = 1 ] && die "postfix is not installed (SKIP_INSTALL=1)"
		log "installing postfix (apt-get)"
		echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
		export DEBIAN_FRONTEND=noninteractive
		timeout 600 apt-get install -y -q --no-install-recommends postfix >>"$LOG" 2>&1 ||
			{ timeout 300 apt-get update -q >>"$LOG" 2>&1 &&
				timeout 600 apt-get install -y -q --no-install-recommends postfix >>"$LOG" 2>&1; } ||
			die "apt-get install postfix failed (see $LOG)"
	fi
	if postfix status >/dev/null 2>&1; then
		die "a Postfix is already running: this script reconfigures Postfix, stop it first (postfix stop)"
	fi
	for f in main.cf master.cf; do
		if [ -f "/etc/postfix/$f" ] && ! grep -qF "$MARK" "/etc/postfix/$f"; then
			cp -p "/etc/postfix/$f" "/etc/postfix/$f.bench-backup"
			log "saved /etc/postfix/$f as $f.bench-backup (restored at the end)"
		fi
	done
	[ -f /etc/postfix/main.cf ] || CREATED_MAIN=1
	[ -f /etc/postfix/master.cf ] || cp /usr/share/postfix/master.cf.dist /etc/postfix/master.cf
	# main.cf: defaults, except what a loopback relay to the sink needs.
	# Postfix writes and fsyncs the queue file before its 250 by default.
	cat >/etc/postfix/main.cf <<EOF
$MARK: a loopback relay to the bench sink; defaults otherwise.
compatibility_level = 3.6
myhostname = postfix.bench.localdomain
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [${POSTFIX_SINK%:*}]:${POSTFIX_SINK##*:}
# The default (10240000) is below the 10 MiB and 25 MiB cases.
message_size_limit = 52428800
EOF
	if [ "$POSTFIX_LOG" = 1 ]; then
		echo "maillog_file = $WORK/postfix.log" >>/etc/postfix/main.cf
	fi
	# master.cf: smtpd on 127.0.0.1:2526 instead of port 25.
	postconf -M# smtp/inet >>"$LOG" 2>&1 || true
	postconf -M "$POSTFIX_LISTEN/inet=$POSTFIX_LISTEN inet n - y - - smtpd"
	grep -qF "$MARK" /etc/postfix/master.cf || printf '%s: smtpd on %s\n' "$MARK" "$POSTFIX_LISTEN" >>/etc/postfix/master.cf
	# Debian runs the daemons chrooted: copy resolv.conf, hosts... into it.
	[ -x /usr/lib/postfix/configure-instance.sh ] && /usr/lib/postfix/configure-instance.sh - >>"$LOG" 2>&1
	postfix check >>"$LOG" 2>&1 || die "postfix check failed (see $LOG)"
	log "starting postfix on $POSTFIX_LISTEN, relayhost $POSTFIX_SINK"
	postfix start >>"$LOG" 2>&1 || die "postfix start failed (see $LOG)"
	POSTFIX_STARTED=1
	wait_port "$POSTFIX_LISTEN" 30 || die "postfix does not listen on $POSTFIX_LISTEN"
	for ((i = 0; i < 100; i++)); do [ -s /var/spool/postfix/pid/master.pid ] && break; sleep 0.1; done
	PF_PID=$(tr -d ' \n' </var/spool/postfix/pid/master.pid)
	[ -n "$PF_PID" ] || die "no Postfix master pid"
	log "postfix master pid $PF_PID ($(postconf -h mail_version))"
fi

# ---- jetrelay ---------------------------------------------------------------
# Every variant is a relay of its own in the rounds below; each is started
# fresh, on an empty store, when its turn comes.
JRELAYS=""
if [ "$want_jetrelay" = 1 ]; then
	for v in $VARIANTS; do JRELAYS="$JRELAYS jetrelay-$v"; done
	for v in $VARIANTS; do case $v in r3*) for n in 1 2 3; do
		port_busy "127.0.0.1:$((R3_CLIENT + n))" && die "127.0.0.1:$((R3_CLIENT + n)) is in use (r3 broker)"
		port_busy "127.0.0.1:$((R3_ROUTE + n))" && die "127.0.0.1:$((R3_ROUTE + n)) is in use (r3 route)"
	done ;; esac; done
fi
ALL=""
[ "$want_postfix" = 1 ] && ALL="postfix"
ALL="$ALL$JRELAYS"
if [ "$FLUSH_RUNS" -gt 0 ] && ! command -v strace >/dev/null; then
	[ "$SKIP_INSTALL" = 1 ] && die "FLUSH_RUNS needs strace (SKIP_INSTALL=1)"
	log "installing strace (apt-get)"
	DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q --no-install-recommends strace >>"$LOG" 2>&1 ||
		die "apt-get install strace failed (see $LOG)"
fi

FAILED=0
# run_source relay case run target sink pid: smtp-source sends, the bench
# sink receives and samples the relay. One JSON line per run in $OUT:
# accepted/s over smtp-source's run, delivered/s from its start until the
# sink had every message, the relay's CPU and peak RSS/PSS.
run_source() {
	local relay=$1 cas=$2 target=$4 sink=$5 pid=$6 n spid t0 t1 t2 rc=0
	n=$(source_count "$cas")
	# shellcheck disable=SC2086
	"$JR" bench --sink-only --sink "$sink" --count "$n" --label "$relay" --case "$cas" \
		--timeout "$TIMEOUT" --pid "$pid" --progress 0 --json $BENCH_ARGS >"$WORK/sink.json" 2>>"$LOG" &
	spid=$!
	if ! wait_port "$sink" 10; then
		kill "$spid" 2>/dev/null
		die "the bench sink does not listen on $sink"
	fi
	t0=$(date +%s%N)
	timeout "$TIMEOUT" smtp-source -s "$CONC" -m "$n" -l "$(source_len "$cas")" \
		-f bench@source.bench.example -t u0@d0.bench.example -M source.bench.example \
		"$target" >>"$LOG" 2>&1 || rc=$?
	t1=$(date +%s%N)
	# Not every message went out: do not wait for the sink's timeout.
	[ "$rc" = 0 ] || kill "$spid" 2>/dev/null
	if ! wait "$spid" && [ "$rc" = 0 ]; then rc=1; fi
	t2=$(date +%s%N)
	jq -c --arg relay "$relay" --arg cas "$cas" --argjson n "$n" --argjson t0 "$t0" \
		--argjson t1 "$t1" --argjson t2 "$t2" --argjson rc "$rc" '{
		loadgen: "smtp-source", label: $relay, case: $cas, messages: $n, ok: ($rc == 0 and .ok),
		accepted_per_sec: ($n * 1e9 / ($t1 - $t0)), delivered_per_sec: ($n * 1e9 / ($t2 - $t0)),
		sink_msgs_per_sec, sink_stats, process, bench_cpu_seconds}' "$WORK/sink.json" >"$WORK/last.json" ||
		{ rc=1; echo '{}' >"$WORK/last.json"; }
	cat "$WORK/last.json" >>"$OUT"
	log "$(jq -r '"\(.label) \(.case) run '"$3"' (smtp-source): ok=\(.ok) accepted \(.accepted_per_sec|floor)/s delivered \(.delivered_per_sec|floor)/s cpu \(.process.cpu_seconds)s rss \(.process.rss_peak_mib|floor)MiB"' "$WORK/last.json")"
	[ "$rc" = 0 ] || FAILED=$((FAILED + 1))
	sleep 2 # let the relay settle (bounded)
}

# source_report FILE: a Markdown table of the medians of the smtp-source runs.
source_report() {
	jq -rs '
	def median: sort | if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
	def r: if . == null then "-" else (. * 10 | round / 10 | tostring) end;
	group_by(.case) | map(
		. as $runs | ($runs | map(select(.label == "postfix")) | map(.delivered_per_sec) | median) as $pf |
		($runs | group_by(.label) | reverse | .[] | {
			case: .[0].case, label: .[0].label, runs: length,
			acc: (map(.accepted_per_sec) | median), del: (map(.delivered_per_sec) | median),
			cpu: (map(.process.cpu_seconds * 1000 / .messages) | median),
			rss: (map(.process.rss_peak_mib) | median), pss: (map(.process.pss_peak_mib) | median),
			ratio: (if $pf == null or .[0].label == "postfix" then null else ((map(.delivered_per_sec) | median) / $pf) end)})
	) | flatten |
	("| case | relay | runs | accepted msg/s | delivered msg/s | ratio | CPU ms/msg | peak RSS MiB | peak PSS MiB |",
	 "|---|---|---|---|---|---|---|---|---|",
	 (.[] | "| \(.case) | \(.label) | \(.runs) | \(.acc|r) | \(.del|r) | \(if .ratio == null then "" else (.ratio * 100 | round / 100 | tostring) + "×" end) | \(.cpu * 100 | round / 100) | \(.rss|r) | \(.pss|r) |"))' "$1"
}

run_one() { # relay case run [extra bench flags]
	local relay=$1 cas=$2 target sink pid args rc=0 extra=${4:-}
	if [ "$relay" = postfix ]; then
		target=$POSTFIX_LISTEN sink=$POSTFIX_SINK pid=$PF_PID
	else
		target=$JETRELAY_LISTEN sink=$JETRELAY_SINK pid=$(echo $JPIDS | tr ' ' ',')
	fi
	if [ "$LOADGEN" = smtp-source ]; then
		run_source "$relay" "$cas" "$3" "$target" "$sink" "$pid"
		return
	fi
	args=$(case_args "$cas")
	# shellcheck disable=SC2086
	"$JR" bench --target "$target" --sink "$sink" --label "$relay" --case "$cas" $args \
		--timeout "$TIMEOUT" --pid "$pid" --progress 0 --json --append "$OUT" $BENCH_ARGS $extra \
		>"$WORK/last.json" 2>>"$LOG" || rc=$?
	if [ -s "$WORK/last.json" ] && command -v jq >/dev/null; then
		log "$(jq -r '"\(.label) \(.case) run '"$3"': ok=\(.ok) accepted \(.accepted_per_sec|floor)/s delivered \(.delivered_per_sec|floor)/s p50 \(.latency_ms.p50)ms cpu \(.process.cpu_seconds)s rss \(.process.rss_peak_mib|floor)MiB\(if .flushes then " flushes/msg \(.flushes.per_message)" else "" end) \(.error // "")"' "$WORK/last.json")"
	else
		log "$relay $cas run $3: exit $rc"
	fi
	[ "$rc" = 0 ] || FAILED=$((FAILED + 1))
	sleep 2 # let the relay settle (bounded)
}

log "results: $OUT"
# rounds: every relay in turn (the order rotates from round to round, so
# that none always runs on a freshly idle machine), all cases each.
relays=($ALL)
for ((run = 1; run <= RUNS; run++)); do
	k=$(((run - 1) % ${#relays[@]}))
	order=("${relays[@]:k}" "${relays[@]:0:k}")
	for relay in "${order[@]}"; do
		[ "$relay" = postfix ] || start_jetrelay "${relay#jetrelay-}"
		for cas in $CASES; do
			if [ "$relay" != postfix ] && [ "$cas" = mem25m ]; then
				# A fresh process on an empty store, so that the growth
				# is that of one 25 MiB message, not what the earlier
				# cases left in the Go heap or the store.
				stop_jetrelay
				start_jetrelay "${relay#jetrelay-}"
				sleep 2
			fi
			run_one "$relay" "$cas" "$run"
		done
		[ "$relay" = postfix ] || stop_jetrelay
	done
done
# flush counts: traced runs, reported in a table of their own.
for ((run = 1; run <= FLUSH_RUNS; run++)); do
	for relay in "${relays[@]}"; do
		[ "$relay" = postfix ] || start_jetrelay "${relay#jetrelay-}"
		for cas in $CASES; do
			[ "$cas" = mem25m ] && continue
			run_one "$relay" "$cas" "flush-$run" --count-flushes
		done
		[ "$relay" = postfix ] || stop_jetrelay
	done
done

{
	echo "jetrelay bench/compare.sh, $STAMP: $(nproc) CPUs, RUNS=$RUNS CONC=$CONC PER_CONN=$PER_CONN SCALE_PCT=$SCALE_PCT LOADGEN=$LOADGEN VARIANTS=\"$VARIANTS\" FLUSH_RUNS=$FLUSH_RUNS, medians"
	echo
	if [ "$LOADGEN" = smtp-source ]; then
		source_report "$OUT"
	else
		"$JR" bench report --baseline postfix "$OUT"
	fi
} | tee "$REPORT"
log "report: $REPORT"
[ "$FAILED" = 0 ] || die "$FAILED bench runs failed (see $OUT and $LOG)"
