# shellcheck shell=bash
# Runs the steps of an apply script (see homekube/plan/script.py, which sets before this:
# hk_mark, the marker line prefix; hk_grace, seconds between TERM and KILL; hk_record, the
# file naming the step that runs now).
# shellcheck disable=SC2154  # those three are set by the including script
hk_pid=

# Just before a step's limit, list what it still runs: a hung apt-get prints nothing, its
# processes are what tells where it hangs.
hk_watch() {
  local pid=$1 start=$SECONDS at=$(( $2 - 2 )) d s cmd
  while kill -0 "$pid" 2>/dev/null; do
    if [ $((SECONDS - start)) -ge "$at" ]; then
      printf 'still running after %d s:\n' "$at"
      for d in /proc/[0-9]*; do
        s=$(cat "$d/stat" 2>/dev/null) || continue
        s=${s##*) }
        # the fields after the command name, split into $1.. ($3 is the parent pid)
        # shellcheck disable=SC2086
        set -- $s
        [ "$3" = "$pid" ] || continue
        cmd=$(tr '\0' ' ' < "$d/cmdline" 2>/dev/null)
        printf '  %s %s\n' "${d#/proc/}" "${cmd:0:200}"
      done
      return 0
    fi
    sleep 0.2
  done
}

# hk_step SECONDS CHANGE RUN LABEL shown|secret, the step's text on fd 3: timeout runs in
# the background (it makes its own process group), recorded, waited for; `wait` is
# interrupted by the TERM trap, which then stops the group. A secret step is not watched:
# its arguments may carry the secret.
hk_step() {
  local rc=0 s=$SECONDS w=
  timeout -k "$hk_grace" "$1" bash /dev/fd/3 </dev/null 2>&1 &
  hk_pid=$!
  printf '%s %s %s %s %s\n' "$hk_pid" "$(cut -d' ' -f22 "/proc/$hk_pid/stat" 2>/dev/null || echo -)" \
    "$$" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$4" > "$hk_record" 2>/dev/null || true
  if [ "$5" = shown ] && [ "$1" -ge 5 ]; then hk_watch "$hk_pid" "$1" & w=$!; fi
  wait "$hk_pid" || rc=$?
  [ -z "$w" ] || wait "$w" 2>/dev/null || true
  hk_pid=
  rm -f -- "$hk_record"
  if [ "$rc" -ge 124 ] && [ "$rc" -ne 126 ] && [ "$rc" -ne 127 ] && [ $((SECONDS - s)) -ge "$1" ]; then
    printf '%s timeout %d %d %d\n' "$hk_mark" "$2" "$3" "$1"
  fi
  return "$rc"
}

# Stop the running step's process group: TERM, then KILL after the grace period.
hk_stop() {
  [ -n "$hk_pid" ] || return 0
  kill -TERM -- "-$hk_pid" 2>/dev/null || return 0
  local n=0
  while kill -0 -- "-$hk_pid" 2>/dev/null && [ $n -lt $((hk_grace * 10)) ]; do sleep 0.1; n=$((n + 1)); done
  kill -KILL -- "-$hk_pid" 2>/dev/null || true
  rm -f -- "$hk_record"
}
