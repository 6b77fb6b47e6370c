#!/usr/bin/env bash
# docs/model/check.sh -- model-check the shmbus protocol models with spin.
#
# Runs every configuration of ring.pml, doorbell.pml, board.pml and fanout.pml in a temporary
# directory (nothing is written to the repository) and checks each result
# against what is expected:
#
#   pass      the run must finish the whole state space with 0 errors;
#   fail:RE   the run must report an error whose pan message matches the
#             extended regular expression RE; with @@PROC:TEXT appended
#             (any number of times), the replayed counterexample must also
#             end with a PROC process blocked at the model line holding
#             TEXT, which pins down which deadlock was found.  These are
#             the deliberately
#             broken variants (NO_RESTORE, BROKEN_ORDER, ...), the Go code
#             as it is where the models found a problem, and the limits
#             protocol.md documents.  They make sure the properties have
#             teeth: a model that cannot fail would pass silently.
#
# Exit status: 0 when every run is as expected, 1 otherwise.  One line per
# run.  Needs spin (6.5 or later), a C compiler and bash 4.3.  See README.md.
#
# Usage: bash docs/model/check.sh [NAME-PATTERN]   (a grep -E pattern on run names)
# Environment: MODEL_JOBS (parallel runs, default: CPUs, at most 4),
# MODEL_TIMEOUT (seconds per run, default 150), CC (default gcc),
# MODEL_KEEP=1 (keep the temporary directory, with each run's pan output
# and counterexample trail, instead of removing it).

set -u -o pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
only=${1:-}
cc=${CC:-gcc}
limit=${MODEL_TIMEOUT:-150}      # seconds per run

for tool in spin "$cc"; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "check.sh: $tool not found (Debian/Ubuntu: apt-get install spin gcc)" >&2
		exit 1
	fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/shmbus-model.XXXXXX") || exit 1
if [[ -n ${MODEL_KEEP:-} ]]; then
	trap 'echo "runs kept in $tmp (replay a counterexample: cd $tmp/NAME && spin -t -p -g <spin -D options> MODEL.pml)"' EXIT
else
	trap 'rm -rf "$tmp"' EXIT
fi

jobs=${MODEL_JOBS:-$(nproc 2>/dev/null || echo 1)}
((jobs > 4)) && jobs=4
((jobs < 1)) && jobs=1
start=$SECONDS
order=()

# section TITLE: a heading in the output.
section() {
	order+=("#$1")
}

# run NAME MODEL KIND EXPECT [spin -D options...]
#   KIND: safety (assertions, invalid end states) | live (LTL, weak fairness)
#         | safety-big (the same with -DCOLLAPSE, for the largest runs)
# Starts the run in the background; its line goes to $tmp/NAME.line.
run() {
	local name=$1
	if [[ -n $only ]] && ! grep -qE -- "$only" <<<"$name"; then
		return
	fi
	order+=("$name")
	while (($(jobs -rp | wc -l) >= jobs)); do
		wait -n
	done
	onerun "$@" >"$tmp/$name.line" 2>&1 &
}

onerun() {
	local name=$1 model=$2 kind=$3 expect=$4
	shift 4
	local d="$tmp/$name"
	mkdir -p "$d" && cp "$here/$model" "$d/" || { echo "FAIL  $name: cannot copy $model"; return; }

	local cflags=(-O2 -w) pflags=(-m2000000)
	case $kind in
	safety) cflags+=(-DSAFETY) ;;
	safety-big) cflags+=(-DSAFETY -DCOLLAPSE) pflags+=(-w26) ;;
	live) pflags+=(-a -f) ;;
	esac

	local t0=$SECONDS out verdict detail
	if ! (cd "$d" && spin -a "$@" "$model") >"$d/spin.out" 2>&1; then
		printf 'FAIL  %-28s spin -a %s failed:\n' "$name" "$*"
		sed 's/^/      /' "$d/spin.out" | head -20
		return
	fi
	if ! (cd "$d" && "$cc" "${cflags[@]}" -o pan pan.c) >"$d/cc.out" 2>&1; then
		printf 'FAIL  %-28s cc failed:\n' "$name"
		sed 's/^/      /' "$d/cc.out" | head -20
		return
	fi
	(cd "$d" && timeout "$limit" ./pan "${pflags[@]}") >"$d/pan.out" 2>&1
	local rc=$?
	out="$d/pan.out"

	local errors states secs first
	errors=$(sed -n 's/.*errors: \([0-9][0-9]*\).*/\1/p' "$out" | tail -1)
	states=$(sed -n 's/^ *\([0-9.e+]*\) states, stored.*/\1/p' "$out" | tail -1)
	secs=$(sed -n 's/^pan: elapsed time \([0-9.e+-]*\) seconds.*/\1/p' "$out" | tail -1)
	first=$(grep -m1 -E '^pan:1: ' "$out" | sed 's/^pan:1: //; s/ (at depth [0-9]*)//')
	detail=$(printf '%10s states %6ss' "${states:-?}" "${secs:-?}")

	if [[ $rc -eq 124 ]]; then
		verdict=FAIL
		detail="$detail  timed out after ${limit}s"
	elif [[ -z $errors ]]; then
		verdict=FAIL
		detail="$detail  no result from pan (exit $rc): $(tail -3 "$out" | tr '\n' ' ')"
	elif [[ $expect == pass ]]; then
		if [[ $errors == 0 ]] && ! grep -qE 'max search depth too small|Search not completed' "$out"; then
			verdict=ok
			detail="$detail  0 errors"
		else
			verdict=FAIL
			detail="$detail  expected 0 errors, got $errors: ${first:-search incomplete}"
		fi
	else
		local spec=${expect#fail:} re where
		re=${spec%%@@*}
		if [[ $errors != 0 ]] && grep -qE -- "$re" <<<"$first"; then
			verdict=ok
			detail="$detail  error found as expected: $first"
			if [[ $spec == *@@* ]]; then
				where=$(wherestuck "$d" "$model" "${spec#*@@}" "$@")
				if [[ -n $where ]]; then
					verdict=FAIL
					detail="$detail; but $where"
				else
					where=${spec#*@@}
					detail="$detail, blocked: ${where//@@/ + }"
				fi
			fi
		else
			verdict=FAIL
			detail="$detail  expected an error matching /$re/, got $errors: ${first:-none}"
		fi
	fi
	printf '%-4s  %-28s %s  [%ds]\n' "$verdict" "$name" "$detail" $((SECONDS - t0))
}

# wherestuck DIR MODEL 'PROC:TEXT@@PROC:TEXT...' [spin -D options]: replay
# the trail; print what is wrong if some PROC is not blocked at TEXT's line.
wherestuck() {
	local d=$1 model=$2 specs=$3 spec proc text line
	shift 3
	local final
	final=$(cd "$d" && spin -t -p "$@" "$model" 2>&1 | grep -E "^ *[0-9]+:[[:space:]]+proc +[0-9]+ \([A-Za-z]+:1\) $model:[0-9]+ \(state [0-9]+\)( <valid end state>)?\$")
	while [[ -n $specs ]]; do
		spec=${specs%%@@*}
		[[ $specs == *@@* ]] && specs=${specs#*@@} || specs=
		proc=${spec%%:*}
		text=${spec#*:}
		line=$(grep -nF -- "$text" "$d/$model" | head -1 | cut -d: -f1)
		if [[ -z $line ]] || ! grep -qE "\($proc:1\) $model:$line " <<<"$final"; then
			echo "no $proc blocked at '$text' (line ${line:-?}) at the end of the trail"
			return
		fi
	done
}

lost='assertion violated +!\(\(sleeping\[i\]'       # doorbell: asleep while ready
padpub='assertion violated \(\(from!=c0\)\|\|'     # ring: padding over a published record
stuck='invalid end state'
waitroom='Producer:WaitRoom: until HasRoom'           # a producer waiting for room
waitrecover='Consumer:changed -> goto loop'           # the consumer: recovery cannot decide
waitdata='Consumer:atomic { (lenw[pos % CAP] != 0'    # the consumer: waiting for data

section "== ring.pml: MPSC claim / publish / release / recovery"
# The Go code with the three proposed fixes: every property holds.
run ring-fixed              ring.pml safety     pass -DFIX_ALL
run ring-fixed-batch        ring.pml safety     pass -DFIX_ALL -DWL=2
run ring-fixed-wl3          ring.pml safety     pass -DFIX_ALL -DWL=3
run ring-fixed-2deaths      ring.pml safety     pass -DFIX_ALL -DMAXDEAD=2
run ring-fixed-batch-2d     ring.pml safety     pass -DFIX_ALL -DWL=2 -DMAXDEAD=2
run ring-fixed-poll         ring.pml safety     pass -DFIX_ALL -DPOLL
run ring-fixed-3prod        ring.pml safety-big pass -DFIX_ALL -DWL=4
run ring-fixed-liveness     ring.pml live       pass -DFIX_ALL -DLIVENESS
# Alternatives to FIX_LIVE_SPAN / FIX_IDLE_RELEASE that work as well.
run ring-alt-reset-pos      ring.pml safety     pass -DFIX_RECHECK -DFIX_IDLE_RELEASE -DFIX_RESET_POS
run ring-alt-start-4        ring.pml safety     pass -DFIX_RECHECK -DFIX_IDLE_RELEASE -DSTART=4
run ring-poll-as-is         ring.pml safety     pass -DFIX_RECHECK -DFIX_LIVE_SPAN -DPOLL
# Deliberately broken: no restore of the claim record after a failed CAS.
run ring-NO_RESTORE         ring.pml safety     "fail:$stuck@@$waitroom@@$waitrecover" -DFIX_ALL -DNO_RESTORE
run ring-NO_RESTORE-live    ring.pml live       "fail:acceptance cycle" -DFIX_ALL -DNO_RESTORE -DLIVENESS
# Findings: the Go code as it is (see README.md, "What the models found").
run ring-go-as-is           ring.pml safety     "fail:$stuck@@$waitroom@@$waitrecover"
run ring-go-no-recheck-a    ring.pml safety     "fail:$padpub" -DFIX_RECHECK_B -DFIX_LIVE_SPAN -DFIX_IDLE_RELEASE
run ring-go-no-recheck-b    ring.pml safety     "fail:$padpub" -DFIX_RECHECK_A -DFIX_LIVE_SPAN -DFIX_IDLE_RELEASE
run ring-go-live-pos-0      ring.pml safety     "fail:$stuck@@$waitroom@@$waitrecover" -DFIX_RECHECK -DFIX_IDLE_RELEASE
run ring-go-idle-padding    ring.pml safety     "fail:$stuck@@$waitroom@@$waitdata" -DFIX_RECHECK -DFIX_LIVE_SPAN
# Documented limit (protocol.md 5.4): two dead candidates, two consistent ends.
run ring-limit-ambiguous    ring.pml safety-big "fail:$stuck@@$waitrecover" -DFIX_ALL -DWL=4 -DMAXDEAD=2

section "== doorbell.pml: eventcount sleep / wake"
run db-data                 doorbell.pml safety pass
run db-data-kick            doorbell.pml safety pass -DKICK
run db-data-sem             doorbell.pml safety pass -DSEM
run db-data-wake-any        doorbell.pml safety pass -DWAKE_ANY
run db-space                doorbell.pml safety pass -DSPACE
run db-space-kick           doorbell.pml safety pass -DSPACE -DKICK
# Deliberately broken.
run db-BROKEN_ORDER         doorbell.pml safety "fail:$lost" -DBROKEN_ORDER
run db-BROKEN_ORDER-space   doorbell.pml safety "fail:$lost" -DBROKEN_ORDER -DSPACE
run db-NO_RUNG              doorbell.pml safety "fail:assertion violated \(wsa==0\)" -DNO_RUNG
run db-NO_RUNG_CLEAR        doorbell.pml safety "fail:$lost" -DNO_RUNG_CLEAR
run db-BROKEN_ORDER-backstop doorbell.pml safety pass -DBROKEN_ORDER -DBACKSTOP
# Documented limits (protocol.md 3.2, 3.4, 3.6): several sleepers on one
# semaphore, or a futex whose wake skips the oldest sleeper; the backstop
# bounds the delay.
run db-limit-space-sem      doorbell.pml safety "fail:$lost" -DSEM -DSPACE
run db-limit-space-wake-any doorbell.pml safety "fail:$lost" -DWAKE_ANY -DSPACE
run db-limit-space-sem-bs   doorbell.pml safety pass -DSEM -DSPACE -DBACKSTOP

section "== board.pml: board cell copies, lock takeover, watch wake-ups"
boardlost='assertion violated +!\(\(asleep&&'           # board: watcher asleep past a change
run board-copy              board.pml safety pass -DNOWATCH
run board-copy-death        board.pml safety pass -DNOWATCH -DMAXDEAD=1
run board-copy-3w-death     board.pml safety pass -DNOWATCH -DNW=3 -DWR=1 -DMAXDEAD=1
run board-watch             board.pml safety pass -DNR=0
run board-watch-3w          board.pml safety pass -DNR=0 -DNW=3 -DWR=1
run board-watch-wr3         board.pml safety pass -DNR=0 -DWR=3
run board-watch-death-bs    board.pml safety pass -DNR=0 -DMAXDEAD=1 -DBACKSTOP
# Deliberately broken.
run board-SAME_COPY         board.pml safety "fail:assertion violated \(cur!=cw\)" -DNOWATCH -DSAME_COPY
run board-SAME_COPY-death   board.pml safety "fail:assertion violated \(cur!=cw\)" -DNOWATCH -DSAME_COPY -DMAXDEAD=1
run board-NO_SEQ_CHECK      board.pml safety "fail:assertion violated \(\(v0==cr\)&&\(v1==cr\)\)" -DNOWATCH -DNO_SEQ_CHECK
run board-STEAL_LIVE        board.pml safety "fail:assertion violated \(lock==\(id\+1\)\)" -DNOWATCH -DSTEAL_LIVE
run board-RING_FIRST        board.pml safety "fail:$boardlost" -DNR=0 -DRING_FIRST
# Documented limit (semantics.md, Boards): the last writer killed between
# publishing and ringing; only the backstop wakes the watcher.
run board-limit-death       board.pml safety "fail:$boardlost" -DNR=0 -DMAXDEAD=1

section "== fanout.pml: fan-out subscriptions, clean lock, lossy seqlock, registration, deaths"
# The protocol with the fixes of README.md section 1b: every property holds.
# One producer, 4 messages, 2 units, unless NP/NM/NM1/CAP say otherwise.
fo2p='-DNP=2 -DNM=2 -DNM1=1'
fowait='Producer:atomic { woken[me] || DEADWORK || RECLAIMABLE };'   # a producer asleep for room
run fo-blocking             fanout.pml safety pass
run fo-blocking-5           fanout.pml safety pass -DNM=5
run fo-lossy                fanout.pml safety pass -DS0LOSSY
run fo-lossy-cap3           fanout.pml safety pass -DS0LOSSY -DCAP=3 -DNM=5
run fo-2lossy               fanout.pml safety pass -DS0LOSSY -DS1LOSSY
run fo-late                 fanout.pml safety pass -DS1LATE
run fo-late-oldest          fanout.pml safety pass -DS1LATE -DFROM_OLDEST
run fo-late-lossy           fanout.pml safety pass -DS1LATE -DS1LOSSY
run fo-late-lossy-oldest    fanout.pml safety pass -DS1LATE -DS1LOSSY -DFROM_OLDEST
run fo-eph-dies             fanout.pml safety pass -DS1EPH_DIES
run fo-eph-dies-lossy       fanout.pml safety pass -DS1EPH_DIES -DS0LOSSY
run fo-durable-takeover     fanout.pml safety pass -DS1DUR_DIES
run fo-durable-stuck        fanout.pml safety pass -DDURABLE_STUCK
run fo-reg-dies-locked      fanout.pml safety pass -DS1LATE -DS1LOCK_DIES
run fo-2p                   fanout.pml safety pass $fo2p
run fo-2p-lossy             fanout.pml safety pass $fo2p -DS0LOSSY
run fo-2p-late              fanout.pml safety pass $fo2p -DS1LATE
run fo-2p-eph-dies          fanout.pml safety pass $fo2p -DS1EPH_DIES
run fo-2p-cleaner-dies      fanout.pml safety pass $fo2p -DP1LOCK_DIES
run fo-2p-cleaner-dies-lossy  fanout.pml safety pass $fo2p -DP1LOCK_DIES -DS0LOSSY
run fo-2p-cleaner-dies-2lossy fanout.pml safety pass $fo2p -DP1LOCK_DIES -DS0LOSSY -DS1LOSSY
# Deliberately broken.
run fo-NO_RELOAD            fanout.pml safety "fail:$stuck@@$fowait" -DS1LATE -DNO_RELOAD
run fo-REG_NO_LOCK          fanout.pml safety "fail:assertion violated \(h<=c\)" -DS1LATE -DREG_NO_LOCK
run fo-REG_NO_LOCK-oldest   fanout.pml safety "fail:assertion violated \(h<=c\)" -DS1LATE -DFROM_OLDEST -DREG_NO_LOCK
run fo-NO_POSTCHECK         fanout.pml safety "fail:assertion violated \(v==mat\[c\]\)" -DS0LOSSY -DNO_POSTCHECK
run fo-NO_POSTCHECK-2lossy  fanout.pml safety "fail:assertion violated \(v==mat\[c\]\)" -DS0LOSSY -DS1LOSSY -DNO_POSTCHECK
# Findings: the protocol as first written (README.md section 1b).
run fo-spec-no-lap-check    fanout.pml safety "fail:assertion violated \(v==mat\[c\]\)" -DNO_LAP_CHECK
run fo-spec-no-lap-check-lossy fanout.pml safety "fail:assertion violated \(v==mat\[c\]\)" -DNO_LAP_CHECK -DS0LOSSY
run fo-spec-reg-plain-unlock fanout.pml safety "fail:$stuck@@$fowait" -DS1LATE -DREG_PLAIN_UNLOCK
run fo-spec-latest-at-tail  fanout.pml safety "fail:assertion violated \(\(m-mc\)==\(r-c\)\)" -DS1LATE -DS1LOSSY -DLATEST_AT_TAIL
run fo-spec-reclaim-no-poll fanout.pml safety "fail:$stuck@@$fowait" $fo2p -DS0LOSSY -DS1LOSSY -DRECLAIM_SPACE_ONLY
run fo-spec-lossy-waits     fanout.pml safety "fail:$stuck@@Sub:atomic { !(cseq & 1) };" $fo2p -DP1LOCK_DIES -DS0LOSSY -DS1LOSSY -DLOSSY_WAITS
run fo-spec-no-seq-repair   fanout.pml safety "fail:$stuck@@Sub:lossy: wait for an even cleanSeq" $fo2p -DP1LOCK_DIES -DS0LOSSY -DS1LOSSY -DNO_SEQ_REPAIR

wait

bad=0
runs=0
heading=
for e in "${order[@]}"; do
	if [[ $e == \#* ]]; then
		heading=${e#\#}
		continue
	fi
	if [[ -n $heading ]]; then
		echo "$heading"
		heading=
	fi
	runs=$((runs + 1))
	if [[ -s $tmp/$e.line ]]; then
		cat "$tmp/$e.line"
	else
		echo "FAIL  $e: no result"
	fi
	grep -q '^ok ' "$tmp/$e.line" 2>/dev/null || bad=1
done

if [[ $runs -eq 0 ]]; then
	echo "check.sh: no run matches '$only'" >&2
	exit 1
fi
if [[ $bad -ne 0 ]]; then
	echo "model check FAILED ($runs runs, $((SECONDS - start))s, $jobs in parallel)"
	exit 1
fi
echo "model check ok ($runs runs, $((SECONDS - start))s, $jobs in parallel)"
