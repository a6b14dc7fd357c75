# shellcheck shell=bash
# Check that every URL given as an argument ($@) can be fetched: one `curl -fsI` per URL, all
# in parallel, then one message. Prints "cannot fetch <first> (and N more): <reason>" plus
# one line per other URL and exits 1 when anything is missing, so `apply` stops before the
# first Kubernetes change.
# Settings (assigned before this text): hk_not_found, what an HTTP 404 means here.
: "${hk_not_found:?}"
d=$(mktemp -d); trap 'rm -rf "$d"' EXIT
# one probe: "<curl exit> <http code> <url>" into $d/<index>
hk_probe() {
    code=$(curl -fsSIL -o /dev/null -w '%{http_code}' --connect-timeout 3 --max-time 10 "$2" \
        2>/dev/null) && rc=0 || rc=$?
    echo "$rc ${code:-000} $2" > "$d/$1"
}
hk_why() {
    case "$1" in
        6) echo "cannot resolve the host name";;
        7) echo "no route / connection refused";;
        22) if [ "$2" = 404 ]; then echo "HTTP 404, $hk_not_found"; else echo "HTTP $2"; fi;;
        28) echo "timed out";;
        35|51|58|60|77) echo "TLS error";;
        *) echo "curl exit $1";;
    esac
}
n=0
for u in "$@"; do hk_probe "$n" "$u" & n=$((n + 1)); done
wait
bad=0; first=''; fwhy=''; rest=''; i=0
while [ "$i" -lt "$n" ]; do
    if read -r rc code u < "$d/$i" && [ "$rc" != 0 ]; then
        bad=$((bad + 1)); why=$(hk_why "$rc" "$code")
        if [ -z "$first" ]; then first=$u; fwhy=$why; else rest="$rest  $u: $why\n"; fi
    fi
    i=$((i + 1))
done
[ "$bad" = 0 ] && exit 0
more=''; [ "$bad" -gt 1 ] && more=" (and $((bad - 1)) more)"
echo "cannot fetch $first$more: $fwhy" >&2; printf "%b" "$rest" >&2
echo 'Nothing of the Kubernetes layer was changed. Put these files on the mirror (artifacts.mirror) or let the host reach them, then run apply again.' >&2
exit 1
