# bench/lib.sh: helpers shared by the benchmark scripts (sourced, not run).

die() {
	echo "bench: $*" >&2
	exit 1
}
log() { echo "bench: $*" >&2; }

# need TOOL PACKAGE: fail unless TOOL is on PATH.
need() {
	command -v "$1" >/dev/null 2>&1 || die "missing tool '$1' (install $2)"
}

is_uint() { [[ $1 =~ ^[0-9]+$ ]] && (($1 > 0)); }

# median FILE COLUMN: median of one column (mean of the middle two for an
# even count); empty when there are no samples.
median() {
	[[ -s $1 ]] || return 0
	awk -v c="$2" '{print $c}' "$1" | sort -g | awk '
		{ v[NR] = $1 }
		END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# num VALUE FORMAT: VALUE formatted, or "fail" when there is none.
num() {
	if [[ -n $1 ]]; then printf "$2" "$1"; else echo fail; fi
}
