/* main.c - the command line: run, check, ctl, version. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <lua.h>
#include <nghttp2/nghttp2ver.h>
#include <openssl/crypto.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "ctl.h"
#include "log.h"
#include "probe.h"
#include "waf_cli.h"
#include "server.h"

static void usage(FILE *out)
{
	fprintf(out, "usage: sluice run -c FILE [--upgrade] [--log-level debug|info|warn|error]   (or SLUICE_LOG_LEVEL)\n"
	             "       sluice check -c FILE\n"
	             "       sluice ctl [-s SOCKET] [--json] [--timeout SECONDS] COMMAND...\n"
	             "       sluice probe tcp HOST:PORT [--timeout DURATION]\n"
	             "       sluice probe http http://HOST:PORT/PATH [--timeout DURATION] [--token-file FILE]\n"
	             "       sluice waf test [--paranoia N] [--rules DIR] FILE...\n"
	             "       sluice version\n"
	             "\n"
	             "  run      start the gateway with the config FILE (a Lua file returning a table);\n"
	             "           --upgrade takes over from the sluice on the config's admin socket (docs/admin.md)\n"
	             "  check    validate FILE: exit 0 with a summary, or 1 with every error\n"
	             "  ctl      talk to a running sluice's admin socket (sluice ctl help)\n"
	             "  probe    exit 0 if HOST:PORT accepts a TCP connection, or if GET URL answers 2xx\n"
	             "           (container health checks: http://127.0.0.1:9901/readyz)\n"
	             "  waf      replay requests against the WAF rules offline (docs/waf.md)\n"
	             "  version  print the version and the libraries sluice was built with\n");
}

static int print_version(void)
{
	char pcre2_version[32] = "";
	if (pcre2_config(PCRE2_CONFIG_VERSION, pcre2_version) < 0)
		strcpy(pcre2_version, "unknown");
	printf("sluice %s\n", PACKAGE_VERSION);
	printf("libevent %s\n", event_get_version());
	printf("OpenSSL %s\n", OpenSSL_version(OPENSSL_VERSION_STRING));
	printf("PCRE2 %s\n", pcre2_version);
	printf("Lua %s.%s.%s\n", LUA_VERSION_MAJOR, LUA_VERSION_MINOR, LUA_VERSION_RELEASE);
	printf("hiredis %d.%d.%d\n", HIREDIS_MAJOR, HIREDIS_MINOR, HIREDIS_PATCH);
	printf("nghttp2 %s\n", NGHTTP2_VERSION);
	return 0;
}

static int parse_level(const char *s, enum log_level *out)
{
	static const char *const names[] = {"debug", "info", "warn", "error"};
	for (int i = 0; i < 4; i++)
		if (strcmp(s, names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	return -1;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	const char *cmd = argv[1];
	if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0)
		return print_version();
	if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(cmd, "ctl") == 0)
		return ctl_main(argc - 1, argv + 1);
	if (strcmp(cmd, "probe") == 0)
		return probe_main(argc - 1, argv + 1);
	if (strcmp(cmd, "waf") == 0)
		return waf_cli_main(argc - 1, argv + 1);
	if (strcmp(cmd, "run") != 0 && strcmp(cmd, "check") != 0) {
		fprintf(stderr, "sluice: unknown command \"%s\"\n", cmd);
		usage(stderr);
		return 2;
	}
	const char *config = NULL;
	bool upgrade = false;
	/* containers set the level by environment; --log-level still wins */
	const char *env_level = getenv("SLUICE_LOG_LEVEL");
	if (env_level && *env_level) {
		enum log_level level;
		if (parse_level(env_level, &level) != 0) {
			fprintf(stderr, "sluice: SLUICE_LOG_LEVEL: unknown level \"%s\" (expected debug, info, warn or error)\n",
			        env_level);
			return 2;
		}
		log_set_level(level);
	}
	for (int i = 2; i < argc; i++) {
		if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc) {
			config = argv[++i];
		} else if (strcmp(argv[i], "--upgrade") == 0 && strcmp(cmd, "run") == 0) {
			upgrade = true;
		} else if (strcmp(argv[i], "--log-level") == 0 && i + 1 < argc) {
			enum log_level level;
			if (parse_level(argv[++i], &level) != 0) {
				fprintf(stderr, "sluice: --log-level: unknown level \"%s\" (expected debug, info, warn or error)\n",
				        argv[i]);
				return 2;
			}
			log_set_level(level);
		} else {
			fprintf(stderr, "sluice: %s: unexpected argument \"%s\"\n", cmd, argv[i]);
			usage(stderr);
			return 2;
		}
	}
	if (!config) {
		fprintf(stderr, "sluice: %s needs a config file: sluice %s -c FILE\n", cmd, cmd);
		return 2;
	}
	if (strcmp(cmd, "check") == 0)
		return server_check(config);
	return server_run(config, upgrade);
}
