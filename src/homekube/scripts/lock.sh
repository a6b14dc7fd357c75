# shellcheck shell=bash
# The host lock (see homekube/transport/base.py, which sets before this: hk_lock_path,
# hk_record, hk_settle, hk_grace, hk_holder).
# shellcheck disable=SC2154  # those are set by the including script
hk_alive() { [ "$(cut -d' ' -f22 "/proc/$hk_p/stat" 2>/dev/null)" = "$hk_st" ]; }

# Take the lock on fd 9 and say LOCKED, or say BUSY and who holds it, and exit 75.
# With the lock taken, a step recorded in hk_record whose process group still runs is left
# over from an ended run: if the shell that ran it is still alive it is being stopped, so
# wait for that a little, then say STEP (what, since when) and exit 75; if that shell is
# gone, nothing will ever stop it, so stop it here and say NOTE first.
hk_lock() {
  exec 9>>"$hk_lock_path"
  if ! flock -n 9; then echo BUSY; cat "$hk_lock_path.holder" 2>/dev/null; exit 75; fi
  if [ -s "$hk_record" ] && read -r hk_p hk_st hk_top hk_since hk_what < "$hk_record"; then
    local n=0
    while hk_alive && [ -d "/proc/$hk_top" ] && [ $n -lt $((hk_settle * 10)) ]; do sleep 0.1; n=$((n + 1)); done
    if hk_alive && [ -d "/proc/$hk_top" ]; then
      echo STEP; printf '%s (since %s, process group %s)\n' "$hk_what" "$hk_since" "$hk_p"; exit 75
    elif hk_alive; then
      kill -TERM -- "-$hk_p" 2>/dev/null; n=0
      while kill -0 -- "-$hk_p" 2>/dev/null && [ $n -lt $((hk_grace * 10)) ]; do sleep 0.1; n=$((n + 1)); done
      kill -KILL -- "-$hk_p" 2>/dev/null
      printf 'NOTE stopped an earlier homekube step whose run had ended: %s (running since %s)\n' \
        "$hk_what" "$hk_since"
    fi
    rm -f "$hk_record"
  fi
  printf '%s\n' "$hk_holder" > "$hk_lock_path.holder"; echo LOCKED
}
