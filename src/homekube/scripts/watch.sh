# shellcheck shell=bash
# Runs a script as a job the operator's connection keeps alive (see `watched` in
# homekube/transport/base.py, which sets before this: hk_record, hk_grace, hk_end; and
# defines hk_body, the script).
# shellcheck disable=SC2154  # those are set by the including script

# Stop the job's process group, and the process group of the step it was running (a step
# runs under `timeout`, which leads its own group), when the operator is gone.
hk_halt() {
  kill -TERM -- "-$hk_job" 2>/dev/null || return 0
  local n=0 p st top rest
  while kill -0 -- "-$hk_job" 2>/dev/null && [ $n -lt $(((hk_grace + 5) * 10)) ]; do sleep 0.1; n=$((n + 1)); done
  kill -KILL -- "-$hk_job" 2>/dev/null
  # shellcheck disable=SC2034  # st and rest only take the record's other fields
  if [ -s "$hk_record" ] && read -r p st top rest < "$hk_record" && [ "$top" = "$$" ]; then
    kill -KILL -- "-$p" 2>/dev/null; rm -f "$hk_record"
  fi
}

# Run hk_body as a job in its own process group, print `<hk_end> <status>` when it ends,
# then wait for stdin's EOF; stop the job if that EOF comes first. The job's stdin is
# /dev/null, and it never holds the channel's stdin or the host lock's fd.
hk_watched() {
  exec 4<&0
  set -m
  hk_body </dev/null 4<&- 9>&- &
  hk_job=$!
  set +m
  { cat <&4 >/dev/null 2>&1; hk_halt; } 9>&- </dev/null >/dev/null 2>&1 &
  local watch=$! rc=0
  exec 4<&- 0</dev/null
  trap '' PIPE
  wait "$hk_job" || rc=$?
  printf '\n%s %d\n' "$hk_end" "$rc"
  wait "$watch"
  exit "$rc"
}
