#!/bin/sh
# build.sh OUTDIR - build every t/fuzz/fuzz_*.c into a libFuzzer binary in OUTDIR.
# Each target names the src/ files it links in a "FUZZ_SOURCES:" comment line
# (and any library in a "FUZZ_LIBS:" line, any compiler flag in "FUZZ_CFLAGS:").
# CC (default clang) and EXTRA_CFLAGS may be set in the environment.
set -eu

if [ $# -ne 1 ]; then
	echo "usage: $0 OUTDIR" >&2
	exit 2
fi
fuzz_dir=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$fuzz_dir/../.." && pwd)
out=$1
mkdir -p "$out"

cc=${CC:-clang}
cflags="-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -std=c11 -D_GNU_SOURCE"
cflags="$cflags -Wall -Wextra -Wshadow -Wformat=2 -Wmissing-prototypes -Wstrict-prototypes -Werror"

built=0
for target in "$fuzz_dir"/fuzz_*.c; do
	[ -e "$target" ] || continue
	name=$(basename "$target" .c)
	sources=$(sed -n 's/^.*FUZZ_SOURCES:[[:space:]]*//p' "$target" | head -n 1)
	if [ -z "$sources" ]; then
		echo "$target: no FUZZ_SOURCES line" >&2
		exit 1
	fi
	# libraries beyond libc (e.g. -lpcre2-8), from a "FUZZ_LIBS:" line
	libs=$(sed -n 's/^.*FUZZ_LIBS:[[:space:]]*//p' "$target" | head -n 1)
	# flags the sources need (headers outside src/, macros config.h gives the build)
	tflags=$(sed -n 's/^.*FUZZ_CFLAGS:[[:space:]]*//p' "$target" | head -n 1)
	set --
	for src in $sources; do
		set -- "$@" "$repo/src/$src"
	done
	echo "building $name"
	# shellcheck disable=SC2086 # flags are word lists on purpose
	$cc $cflags $tflags ${EXTRA_CFLAGS:-} -I"$repo/src" -I"$fuzz_dir" "$target" "$@" $libs -o "$out/$name"
	built=$((built + 1))
done
if [ "$built" -eq 0 ]; then
	echo "no fuzz targets in $fuzz_dir" >&2
	exit 1
fi
echo "built $built target(s) in $out"
