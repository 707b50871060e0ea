#include "priv.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

int priv_drop(const char *user)
{
	if (!user)
		return 0;
	struct passwd pw, *res = NULL;
	char buf[4096];
	int rc = getpwnam_r(user, &pw, buf, sizeof buf, &res);
	if (rc != 0 || !res) {
		struct log_line l;
		log_begin(&l, LOG_ERROR, "cannot drop privileges: unknown user");
		log_str(&l, "user", user);
		log_end(&l);
		return -1;
	}
	if (geteuid() != 0) {
		if (geteuid() == pw.pw_uid)
			return 0;
		struct log_line l;
		log_begin(&l, LOG_ERROR, "cannot switch user: not started as root");
		log_str(&l, "user", user);
		log_end(&l);
		return -1;
	}
	if (setgroups(1, &pw.pw_gid) != 0 || setgid(pw.pw_gid) != 0 || setuid(pw.pw_uid) != 0) {
		struct log_line l;
		log_begin(&l, LOG_ERROR, "cannot drop privileges");
		log_str(&l, "user", user);
		log_str(&l, "error", strerror(errno));
		log_end(&l);
		return -1;
	}
	if (pw.pw_uid != 0 && setuid(0) == 0) {
		log_msg(LOG_ERROR, "privileges could be regained after dropping them; refusing to run");
		return -1;
	}
	struct log_line l;
	log_begin(&l, LOG_INFO, "privileges dropped");
	log_str(&l, "user", user);
	log_int(&l, "uid", (long long)pw.pw_uid);
	log_int(&l, "gid", (long long)pw.pw_gid);
	log_end(&l);
	return 0;
}
