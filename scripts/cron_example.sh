#!/usr/bin/env bash
# Nightly mirror of the MICrONS datasets named in a jobs file (see scripts/jobs.example.yaml).
#
# crontab -e:
#   30 2 * * *  /opt/microns/cron_example.sh
#
# Exit codes (as `microns-get --help` documents them): 0 ok, 1 some items failed (or a delete
# was refused), 2 bad jobs file / not enough space (nothing written), 3 another run holds the
# destination's lock, 4 verification failed, 5 a remote could not be listed or read.
# Each run also leaves a JSON report in DEST/.microns-get/reports/.
set -u

JOBS=${MICRONS_JOBS:-/etc/microns-get/jobs.yaml}
LOG=${MICRONS_LOG:-/var/log/microns-get/mirror.log}
MICRONS_GET=${MICRONS_GET:-microns-get}

# No TTY under cron: microns-get prints plain timestamped lines; --quiet keeps cron's mail to
# warnings, failures and the summary, while --log-file keeps every line.
"$MICRONS_GET" mirror "$JOBS" --quiet --log-file "$LOG"
code=$?

case $code in
  0) ;;
  3) echo "microns-get: previous run still going; skipped" >&2; code=0 ;;  # not an error
  *) echo "microns-get mirror exited with $code; see $LOG" >&2 ;;
esac
exit $code
