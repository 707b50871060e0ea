#include "reason.h"

static const char *const reason_names[REASON__COUNT] = {
#define REASON_STR(sym, str) [REASON_##sym] = str,
	REASON_LIST(REASON_STR)
#undef REASON_STR
};

const char *reason_name(enum reason r)
{
	if ((unsigned)r >= REASON__COUNT)
		return "";
	return reason_names[r];
}
