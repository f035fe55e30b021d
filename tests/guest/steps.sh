#!/bin/sh
# The kernel matrix's steps, run by tests/guest/init inside a QEMU guest (tests/tests/kernels.rs).
# Each step prints its commands' output, then one line `STEP <name> PASS|FAIL (<seconds> s)`,
# which the harness parses; the exit status is the number of failed steps. A step says why it
# failed on `why: ` lines (the harness quotes them, and enipin's own `enipin: ` error lines).
# Everything runs in the guest, on enipin's lab addresses (198.18.0.0/15, 2001:db8::/32). Every
# wait is bounded.
#
# Steps: doctor; lab; lab-metadata; lab-split; keep (a kept lab for the next two); watch (restores a
# deleted rule and a removed link pin, then detach leaves nothing); chaos (attach killed at
# several points, then attach and detach still work and leave nothing); cleanup.

failed=0
OUT=/tmp/step.out

now() { cut -d' ' -f1 /proc/uptime; }

# why TEXT: the reason a step fails; returns 1.
why() {
	echo "why: $*"
	return 1
}

# step NAME FUNCTION: runs FUNCTION and prints its verdict line. (dash's variables are global:
# the steps use other names than t0.)
step() {
	echo "=== $1"
	t0=$(now)
	if "$2"; then verdict=PASS; else verdict=FAIL; failed=$((failed + 1)); fi
	echo "STEP $1 $verdict ($(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }') s)"
}

# run CMD...: CMD's output on the console and in $OUT; returns CMD's exit status.
run() {
	echo "\$ $*"
	{ "$@" 2>&1; echo $? >/tmp/status; } | tee "$OUT"
	return "$(cat /tmp/status)"
}

# The last line of the last run is PASS (enipin lab's verdict).
last_is_pass() {
	[ "$(tail -n 1 "$OUT")" = PASS ] || { why "the last line is not PASS"; return 1; }
}

# poll TRIES CMD...: runs CMD every 100 ms until it succeeds, at most TRIES times; the guest
# seconds it waited in $waited. (Under TCG a try costs more than its 100 ms: 300 tries took 45 s.)
poll() {
	n=$1
	shift
	p0=$(now)
	while [ "$n" -gt 0 ]; do
		"$@" >/dev/null 2>&1 && break
		usleep 100000
		n=$((n - 1))
	done
	waited=$(awk -v a="$p0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
	[ "$n" -gt 0 ]
}

# doctor: it exits with 0 (no conflict) or 1 (a conflict: the guest is no cloud host) and says
# something; a panic (101) or a signal fails. Its findings are for the reader, not asserted yet.
doctor() {
	run enipin doctor
	code=$?
	echo "doctor exited $code"
	[ -s "$OUT" ] && [ "$code" -le 1 ] || return 1
	# Every kernel of the matrix runs the datapath: each of doctor's kernel checks answers `ok`
	# and names the path taken (a probe that fails is a warning, a missing piece a conflict).
	for check in bpffs attach redirect "mtu check" "owner tables" "next hop"; do
		grep -q "^ok  *kernel $check: " "$OUT" || { why "kernel $check is not ok"; return 1; }
	done
}

lab() { run enipin lab && last_is_pass; }

lab_metadata() { run enipin lab --metadata && last_is_pass; }

# lab-split: the secondary ENI in a subnet of its own; its eBPF-only step redirects through the
# ENI's gateway as bpf_redirect_neigh's next hop.
lab_split() { run enipin lab --subnets split && last_is_pass; }

# keep: `enipin lab --keep`, then the names it printed (namespaces, pin and state directories,
# the bpffs mount) in HOST, VPC, PEER, PINS, STATE, MOUNT and the enipin command line in E. A
# lab that failed (its last attach, say) is kept too: watch, chaos and cleanup still run on it.
keep() {
	run enipin lab --keep
	code=$?
	kept_names || { why "no kept lab's names in the lab's output"; return 1; }
	[ "$code" = 0 ] || { why "enipin lab --keep exited $code"; return 1; }
	last_is_pass
}

kept_names() {
	HOST=$(sed -n 's/^lab: namespaces host=\([^ ]*\) vpc=.*/\1/p' "$OUT")
	VPC=$(sed -n 's/^lab: namespaces .* vpc=\([^ ]*\) peer=.*/\1/p' "$OUT")
	PEER=$(sed -n 's/^lab: namespaces .* peer=\([^ ]*\)$/\1/p' "$OUT")
	PINS=$(sed -n 's/.* --pin-dir \([^ ]*\) --state-dir [^ ]* detach$/\1/p' "$OUT")
	STATE=$(sed -n 's/.* --pin-dir [^ ]* --state-dir \([^ ]*\) detach$/\1/p' "$OUT")
	MOUNT=$(sed -n 's/^ *umount \([^;]*\);.*/\1/p' "$OUT")
	echo "kept: host=$HOST vpc=$VPC peer=$PEER pins=$PINS state=$STATE mount=$MOUNT"
	E="enipin --netns $HOST --pin-dir $PINS --state-dir $STATE"
	[ -n "$HOST" ] && [ -n "$VPC" ] && [ -n "$PEER" ] && [ -n "$PINS" ] && [ -n "$STATE" ] &&
		[ -n "$MOUNT" ]
}

# Everything of enipin in the kept lab's host namespace: its rules and routes (protocol 229), its
# pins, and a clsact qdisc (the lab's veths start without one: any is enipin's). Prints them.
residue() {
	for f in -4 -6; do
		ip -n "$HOST" $f rule show | grep ' proto 229'
		ip -n "$HOST" $f route show table all protocol 229
	done
	# detach removes the pin directory itself (its bpffs mount stays).
	[ ! -d "$PINS" ] || find "$PINS" -mindepth 1
	tc -n "$HOST" qdisc show | grep clsact
}

nothing_left() {
	left=$(residue 2>&1)
	[ -z "$left" ] && return 0
	echo "$left"
	why "left behind: $(echo "$left" | tr '\n' ';')"
}

# The pin of the TCX link (`link-IFINDEX`) or the netlink filter's record (`nl-IFINDEX-...`).
link_pin() { ls "$PINS" | grep -E '^(link|nl)-[0-9]+' | head -n 1; }

# has_rule LINE: `ip rule show` in the kept host prints LINE (the whole line: several of enipin's
# rules share a priority).
has_rule() { ip -n "$HOST" rule show | grep -qxF "$1"; }

# has_link_pin IFINDEX: a link or netlink record for that interface is pinned.
has_link_pin() { ls "$PINS" | grep -qE "^(link-$1\$|nl-$1-)"; }

# The first reconcile ended: it logs `reconciled after start` or `reconcile after start failed`.
watch_started() { grep -qE 'reconciled after start|reconcile after start failed' /tmp/watch.log; }

# stop PID: SIGTERM, then up to 100 polls for it to end (SIGKILL after). A zombie has ended.
stop() {
	kill -TERM "$1" 2>/dev/null
	poll 100 ended "$1" || { echo "still running $waited s after SIGTERM: SIGKILL"; kill -KILL "$1"; }
	wait "$1"
}

ended() { [ ! -e "/proc/$1" ] || [ "$(cut -d' ' -f3 "/proc/$1/stat")" = Z ]; }

# watch: it attaches the kept lab (detached first: a reconcile that changes nothing logs nothing,
# and its first line is the sign it is ready); a deleted rule and a removed link pin come back;
# SIGTERM stops it; detach leaves nothing.
watch() {
	[ -n "$E" ] || { why "no kept lab"; return 1; }
	run $E detach || return 1
	nothing_left || return 1
	# --interval 1: a pin's removal sends no event, only the periodic reconcile sees it.
	$E watch --interval 1 --metrics-listen none >/tmp/watch.log 2>&1 &
	wpid=$!
	watch_checks
	ok=$?
	stop "$wpid"
	echo "watch exited $?; its log:"
	cat /tmp/watch.log
	run $E detach || ok=1
	nothing_left || ok=1
	return $ok
}

watch_checks() {
	poll 300 watch_started || { why "no first reconcile in $waited s"; return 1; }
	failure=$(grep -m 1 'reconcile after start failed' /tmp/watch.log | cut -c 1-300)
	[ -z "$failure" ] || { why "watch: $failure"; return 1; }
	# A source rule ("20000:	from 198.18.0.10 lookup 20002 ... proto 229"): its priority and
	# source select it alone. `ip rule show` takes no protocol selector: grep enipin's.
	rule=$(ip -n "$HOST" rule show | grep ' proto 229' | grep -E '[[:space:]]from [0-9]' | head -n 1)
	[ -n "$rule" ] || { why "no source rule of enipin's (protocol 229) to delete"; return 1; }
	prio=${rule%%:*}
	src=$(echo "$rule" | sed 's/.*[[:space:]]from \([^ ]*\) .*/\1/')
	echo "\$ ip -n $HOST rule del priority $prio from $src protocol 229"
	ip -n "$HOST" rule del priority "$prio" from "$src" protocol 229 ||
		{ why "could not delete rule $prio from $src"; return 1; }
	poll 100 has_rule "$rule" || { why "rule '$rule' not back in $waited s"; return 1; }
	echo "rule '$rule' is back after $waited s"
	pin=$(link_pin)
	[ -n "$pin" ] || { why "no link pin in $PINS: $(ls "$PINS" | tr '\n' ' ')"; return 1; }
	ifindex=$(echo "$pin" | cut -d- -f2)
	case $pin in
	nl-*) filter_comes_back "$pin" ;;
	*) pin_comes_back "$pin" ;;
	esac
}

# pin_comes_back link-IFINDEX: the TCX link's pin removed (watch holds the link open) is pinned
# again.
pin_comes_back() {
	echo "\$ rm $PINS/$1"
	rm "$PINS/$1" || { why "could not remove $PINS/$1"; return 1; }
	poll 100 has_link_pin "$ifindex" || { why "no pin for ifindex $ifindex in $waited s"; return 1; }
	echo "pin for ifindex $ifindex is back after $waited s: $(link_pin)"
}

# filter_comes_back nl-IFINDEX-PRIORITY-HANDLE: no TCX (< 6.6), so what another tool can take is
# the clsact filter itself (`tc filter del`), leaving enipin's record: watch attaches a new one.
filter_comes_back() {
	prio=$(echo "$1" | cut -d- -f3)
	handle=$(echo "$1" | cut -d- -f4)
	dev=$(ip -n "$HOST" -o link show | awk -F': ' -v i="$ifindex" '$1 == i { sub(/@.*/, "", $2); print $2 }')
	echo "\$ tc -n $HOST filter del dev $dev egress pref $prio handle $handle bpf"
	tc -n "$HOST" filter del dev "$dev" egress pref "$prio" handle "$handle" bpf ||
		{ why "could not delete the filter on $dev"; return 1; }
	has_filter "$dev" && { why "enipin's filter still on $dev"; return 1; }
	poll 100 has_filter "$dev" || { why "no filter of enipin's on $dev in $waited s"; return 1; }
	echo "filter on $dev is back after $waited s: $(link_pin)"
}

has_filter() { tc -n "$HOST" filter show dev "$1" egress | grep -q enipin_egress; }

# chaos: `enipin attach` SIGKILLed at several points; after each, attach succeeds and detach
# leaves nothing. Each round says what the killed attach had installed, to show where the kill
# landed. In a 6.12 guest a whole attach took 0.9-1.1 s; kills up to 500 ms found nothing
# installed yet (the process starts, discovers, loads the program), at 600 ms 19 and at 800 ms
# 31 rules, routes, pins and qdiscs. TCG's timing moves each point around from run to run.
chaos() {
	[ -n "$E" ] || { why "no kept lab"; return 1; }
	nothing_left || { why "not clean before the first round"; return 1; }
	ok=0
	for ms in 5 500 600 700 800 900; do
		$E attach >/tmp/killed.out 2>&1 &
		pid=$!
		usleep $((ms * 1000))
		kill -KILL "$pid" 2>/dev/null
		wait "$pid"
		echo "attach SIGKILLed after $ms ms (exit status $?: 137 is killed); its output:"
		cat /tmp/killed.out
		echo "installed when killed: $(residue 2>/dev/null | wc -l) rules, routes, pins and qdiscs"
		a0=$(now)
		run $E attach || { why "attach after the kill at $ms ms failed"; ok=1; }
		echo "attach took $(awk -v a="$a0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }') s"
		run $E detach || { why "detach after the kill at $ms ms failed"; ok=1; }
		nothing_left || ok=1
	done
	return $ok
}

# cleanup: what `enipin lab --keep` said to remove.
cleanup() {
	[ -n "$HOST" ] || { why "no kept lab"; return 1; }
	ok=0
	for ns in "$HOST" "$VPC" "$PEER"; do ip netns delete "$ns" || ok=1; done
	umount "$MOUNT" && rmdir "$MOUNT" && rm -rf "$STATE" || ok=1
	return $ok
}

step doctor doctor
step lab lab
step lab-metadata lab_metadata
step lab-split lab_split
step keep keep
step watch watch
step chaos chaos
step cleanup cleanup
exit "$failed"
