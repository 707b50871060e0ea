#!/bin/sh
# docker/stack/entry.sh ROLE - start one supporting service of the local stack
# (docker/compose.yaml), configured from the environment; every service runs
# on the host network on the ports the compose file passes.
#   redis       Redis on 127.0.0.1:$REDIS_PORT; the password from the mounted
#               secret /run/secrets/redis_password (written to a 0600 file, never argv)
#   upstream    scripts/demo_upstream.py on 127.0.0.1:$UPSTREAM_PORT named $UPSTREAM_NAME
#   prometheus  Prometheus on 127.0.0.1:$PROMETHEUS_PORT scraping itself and sluice
#   rsyslog     rsyslogd: tails sluice's access log (imfile) and listens on
#               127.0.0.1:$SYSLOG_PORT (TCP); writes JSON lines to /var/log/stack/
set -eu
role=${1:?usage: entry.sh redis|upstream|prometheus|rsyslog}
fill() { # fill TEMPLATE: replace @VAR@ with $VAR
	sed -e "s|@SLUICE_ADMIN_HTTP_PORT@|${SLUICE_ADMIN_HTTP_PORT:-9901}|g" \
		-e "s|@PROMETHEUS_PORT@|${PROMETHEUS_PORT:-9090}|g" \
		-e "s|@SYSLOG_PORT@|${SYSLOG_PORT:-5514}|g" "$1"
}
case "$role" in
redis)
	pw=/run/secrets/redis_password
	[ -r "$pw" ] || { echo "entry.sh: $pw is missing: mount the Redis password there" >&2; exit 1; }
	umask 077 # the password goes into a file only root reads, never into argv
	printf 'requirepass "%s"\n' "$(cat "$pw")" >/tmp/redis.conf
	exec redis-server /tmp/redis.conf --port "${REDIS_PORT:-6379}" --bind 127.0.0.1 --save '' --appendonly no
	;;
upstream)
	exec python3 /opt/stack/demo_upstream.py --host "${UPSTREAM_HOST:-127.0.0.1}" --port "${UPSTREAM_PORT:?}" --name "${UPSTREAM_NAME:?}"
	;;
prometheus)
	fill /opt/stack/prometheus.yml.in >/tmp/prometheus.yml
	exec prometheus --config.file=/tmp/prometheus.yml --storage.tsdb.path=/tmp/prometheus \
		--web.listen-address="127.0.0.1:${PROMETHEUS_PORT:-9090}"
	;;
rsyslog)
	mkdir -p /var/log/stack
	fill /opt/stack/rsyslog.conf.in >/tmp/rsyslog.conf
	rsyslogd -N1 -f /tmp/rsyslog.conf
	exec rsyslogd -n -f /tmp/rsyslog.conf -i /tmp/rsyslogd.pid
	;;
*)
	echo "entry.sh: unknown role '$role' (redis, upstream, prometheus, rsyslog)" >&2
	exit 2
	;;
esac
