#!/usr/bin/env bash
# third_party/go-smtp.sh: third_party/go-smtp is upstream go-smtp (the
# version the root go.mod requires) plus third_party/go-smtp.patch.
#
#   third_party/go-smtp.sh diff             regenerate go-smtp.patch after changing the copy
#   third_party/go-smtp.sh check            fail unless go-smtp.patch is exactly copy minus upstream (CI)
#   third_party/go-smtp.sh upgrade VERSION  replace the copy with upstream VERSION plus the patch
#
# Upstream comes from the Go module proxy (go mod download), as go.sum
# pins it. See third_party/README.md.
set -euo pipefail
cd "$(dirname "$0")"
here=$PWD
self=$here/$(basename "$0")
mod=github.com/emersion/go-smtp

required() {
	awk -v m="$mod" '$1 == m && $2 ~ /^v/ { print $2; exit }' ../go.mod
}

# upstream VERSION: the directory of the pristine module in the module cache.
upstream() {
	local tmp dir
	tmp=$(mktemp -d)
	dir=$(cd "$tmp" && GOFLAGS= GO111MODULE=on go mod download -json "$mod@$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	rmdir "$tmp"
	[ -n "$dir" ] && [ -d "$dir" ] || { echo "go mod download $mod@$1 failed" >&2; exit 1; }
	echo "$dir"
}

# patchof DIR: the patch from upstream to DIR, on stdout (diff -ruN,
# without timestamps, so that it is reproducible).
patchof() {
	local tmp rc=0
	tmp=$(mktemp -d)
	cp -R "$(upstream "$(required)")" "$tmp/a"
	cp -R "$1" "$tmp/b"
	chmod -R u+w "$tmp"
	(cd "$tmp" && LC_ALL=C diff -ruN a b) >"$tmp/patch" || rc=$?
	if [ "$rc" -gt 1 ]; then
		rm -rf "$tmp"
		echo "diff failed" >&2
		exit 1
	fi
	sed -E 's/^((---|\+\+\+) [^	]*)	.*$/\1/' "$tmp/patch"
	rm -rf "$tmp"
}

case "${1:-}" in
diff)
	patchof "$here/go-smtp" >go-smtp.patch.new
	mv go-smtp.patch.new go-smtp.patch
	echo "third_party/go-smtp.patch: $(grep -c '^diff ' go-smtp.patch) files against $mod $(required)"
	;;
check)
	tmp=$(mktemp)
	patchof "$here/go-smtp" >"$tmp"
	if ! cmp -s "$tmp" go-smtp.patch; then
		diff -u go-smtp.patch "$tmp" | head -50 >&2 || true
		rm -f "$tmp"
		echo "third_party/go-smtp.patch is not the difference between third_party/go-smtp and $mod $(required): run third_party/go-smtp.sh diff" >&2
		exit 1
	fi
	rm -f "$tmp"
	echo "third_party/go-smtp is $mod $(required) plus third_party/go-smtp.patch"
	;;
upgrade)
	version=${2:?usage: third_party/go-smtp.sh upgrade VERSION}
	src=$(upstream "$version")
	rm -rf go-smtp.new
	cp -R "$src" go-smtp.new
	chmod -R u+w go-smtp.new
	if ! patch -p1 -d go-smtp.new --no-backup-if-mismatch <go-smtp.patch; then
		echo "the patch does not apply to $version: fix third_party/go-smtp.new (see *.rej), move it to third_party/go-smtp, update go.mod and run third_party/go-smtp.sh diff" >&2
		exit 1
	fi
	rm -rf go-smtp
	mv go-smtp.new go-smtp
	(cd .. && go mod edit -require="$mod@$version" && go mod tidy)
	"$self" diff
	echo "now: (cd third_party/go-smtp && go test -race ./...), go test -race ./..., and review third_party/README.md"
	;;
*)
	sed -n '2,10p' "$self" | sed 's/^# \{0,1\}//'
	exit 2
	;;
esac
