#!/bin/sh
# run.sh OUTDIR SECONDS - run every target built by build.sh for SECONDS each,
# starting from a temporary copy of t/fuzz/corpus/<target>/ so the repository
# does not grow. Crash inputs land in OUTDIR/artifacts/, logs in OUTDIR/<target>.log.
# Exits non-zero if any target crashed, leaked, timed out or failed to start.
set -u

if [ $# -ne 2 ]; then
	echo "usage: $0 OUTDIR SECONDS" >&2
	exit 2
fi
fuzz_dir=$(cd "$(dirname "$0")" && pwd)
out=$1
seconds=$2
case $seconds in
'' | *[!0-9]*)
	echo "SECONDS must be a whole number" >&2
	exit 2
	;;
esac

work=$(mktemp -d "${TMPDIR:-/tmp}/sluice-fuzz.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM
mkdir -p "$out/artifacts" || exit 1

failed=0
ran=0
for bin in "$out"/fuzz_*; do
	if [ ! -f "$bin" ] || [ ! -x "$bin" ]; then
		continue
	fi
	name=$(basename "$bin")
	corpus="$work/$name"
	mkdir -p "$corpus" || exit 1
	if [ -d "$fuzz_dir/corpus/$name" ]; then
		cp -R "$fuzz_dir/corpus/$name/." "$corpus/" || exit 1
	fi
	set --
	dict=$(sed -n 's/^.*FUZZ_DICT:[[:space:]]*//p' "$fuzz_dir/$name.c" 2>/dev/null | head -n 1)
	if [ -n "$dict" ]; then
		set -- "-dict=$fuzz_dir/$dict"
	fi
	log="$out/$name.log"
	"$bin" "$@" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
		-artifact_prefix="$out/artifacts/$name-" "$corpus" >"$log" 2>&1
	rc=$?
	ran=$((ran + 1))
	execs=$(sed -n 's/^stat::number_of_executed_units:[[:space:]]*//p' "$log" | tail -n 1)
	cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
	units=$(find "$corpus" -type f | wc -l)
	echo "$name: exit $rc, ${execs:-?} execs in ${seconds}s, ${cov:-cov: ?}, corpus $units"
	if [ "$rc" -ne 0 ]; then
		failed=$((failed + 1))
		echo "--- $name failed; last lines of $log:"
		tail -n 30 "$log"
	fi
done
if [ "$ran" -eq 0 ]; then
	echo "no fuzz targets in $out (run build.sh first)" >&2
	exit 1
fi
if [ "$failed" -ne 0 ]; then
	echo "$failed of $ran target(s) failed; crash inputs are in $out/artifacts/" >&2
	exit 1
fi
echo "all $ran target(s) ran clean"
