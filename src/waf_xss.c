/* waf_xss.c - HTML/JS injection shapes (waf_xss.h). */
#include "waf_xss.h"

#include <string.h>

static const char *const script_tags[] = {
    "script", "iframe", "frame",  "frameset", "object", "embed",  "applet", "base",  "meta",
    "link",   "style",  "import", "xml",      "isindex", "vmlframe", "xss", "template", "portal",
};

static const char *const url_attributes[] = {
    "href",   "src",   "action",  "formaction", "data",  "xlink:href", "background", "dynsrc", "lowsrc",
    "poster", "code",  "codebase", "from",      "to",    "values",     "by",         "content", "srcset",
    "ping",   "cite",  "longdesc", "usemap",    "manifest", "profile", "classid", "archive",
};

/* DOM event names (the part after "on"); broad on purpose, but generic
 * English words such as "line" are left out: "online=yes" is ordinary. */
static const char *const events[] = {
    "abort", "afterprint", "animationend", "animationiteration", "animationstart", "auxclick", "beforeinput",
    "beforeprint", "beforeunload", "begin", "blur", "bounce", "canplay", "canplaythrough", "change", "click",
    "contextmenu", "copy", "cuechange", "cut", "dblclick", "drag", "dragend", "dragenter", "dragleave",
    "dragover", "dragstart", "drop", "durationchange", "emptied", "end", "ended", "error", "finish", "focus",
    "focusin", "focusout", "formdata", "fullscreenchange", "hashchange", "input", "invalid", "keydown",
    "keypress", "keyup", "load", "loadeddata", "loadedmetadata", "loadend", "loadstart", "message",
    "mousedown", "mouseenter", "mouseleave", "mousemove", "mouseout", "mouseover", "mouseup", "mousewheel",
    "pagehide", "pageshow", "paste", "pause", "play", "playing", "pointercancel", "pointerdown",
    "pointerenter", "pointerleave", "pointermove", "pointerout", "pointerover", "pointerrawupdate",
    "pointerup", "popstate", "progress", "propertychange", "ratechange", "readystatechange", "repeat",
    "reset", "resize", "scroll", "scrollend", "search", "securitypolicyviolation", "seeked", "seeking",
    "select", "selectionchange", "selectstart", "show", "stalled", "start", "storage", "submit", "suspend",
    "timeupdate", "toggle", "touchcancel", "touchend", "touchmove", "touchstart", "transitioncancel",
    "transitionend", "transitionrun", "transitionstart", "unload", "volumechange", "waiting", "wheel",
    "webkitanimationend", "webkitanimationstart", "webkittransitionend", "activate", "beforeactivate",
    "beforecopy", "beforecut", "beforepaste", "beforedeactivate", "deactivate", "filterchange",
    "losecapture", "move", "moveend", "movestart", "contentvisibilityautostatechange", "beforetoggle",
};

static const char *const sinks[] = {"alert", "prompt", "confirm"};

static unsigned char lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

static bool is_alpha(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_blank(unsigned char c)
{
	return c <= 0x20 || c == 0x7f;
}

/* The lower-cased name at s[i..] made of alphanumerics and ':', '-', '_'. */
static size_t read_name(const char *s, size_t n, size_t i, char *out, size_t cap)
{
	size_t k = 0;
	while (i + k < n) {
		unsigned char c = (unsigned char)s[i + k];
		if (!(is_alpha(c) || (c >= '0' && c <= '9') || c == ':' || c == '-' || c == '_'))
			break;
		if (k + 1 < cap)
			out[k] = (char)lower(c);
		k++;
	}
	out[k < cap ? k : cap - 1] = '\0';
	return k;
}

static bool listed(const char *name, const char *const *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(name, list[i]) == 0)
			return true;
	return false;
}

#define LISTED(name, list) listed((name), (list), sizeof(list) / sizeof((list)[0]))

static bool is_event_attr(const char *name)
{
	return name[0] == 'o' && name[1] == 'n' && LISTED(name + 2, events);
}

/* Does s[i..] start a script URL? Blanks and control bytes inside are
 * skipped, as browsers skip them in a scheme. */
static bool script_url_at(const char *s, size_t n, size_t i)
{
	static const char *const schemes[] = {"javascript:", "vbscript:", "livescript:", "data:text/html",
	                                      "data:image/svg+xml", "data:application/xhtml", "data:text/xml"};
	while (i < n && is_blank((unsigned char)s[i]))
		i++;
	for (size_t k = 0; k < sizeof(schemes) / sizeof(schemes[0]); k++) {
		const char *p = schemes[k];
		size_t j = i;
		while (*p && j < n) {
			unsigned char c = (unsigned char)s[j];
			if (is_blank(c) && *p != ' ') {
				j++;
				continue;
			}
			if (lower(c) != (unsigned char)*p)
				break;
			p++;
			j++;
		}
		if (*p == '\0')
			return true;
	}
	return false;
}

static bool contains_ci(const char *s, size_t n, const char *needle)
{
	size_t k = strlen(needle);
	for (size_t i = 0; i + k <= n; i++) {
		size_t j = 0;
		while (j < k && lower((unsigned char)s[i + j]) == (unsigned char)needle[j])
			j++;
		if (j == k)
			return true;
	}
	return false;
}

/* Reads attributes from s[i..] (inside a tag, or a value that broke into a
 * tag's attributes) up to '>' or the end; the shape found, or NULL. */
static const char *scan_attributes(const char *s, size_t n, size_t i, bool in_tag)
{
	char name[40];
	while (i < n) {
		unsigned char c = (unsigned char)s[i];
		if (c == '>' && in_tag)
			return NULL;
		if (!is_alpha(c)) {
			i++;
			continue;
		}
		/* an attribute name must follow a separator, as HTML's tokenizer reads it */
		unsigned char before = i > 0 ? (unsigned char)s[i - 1] : ' ';
		size_t len = read_name(s, n, i, name, sizeof(name));
		bool separated = is_blank(before) || before == '/' || before == '"' || before == '\'' || before == '`' ||
		                 (in_tag && before == '<');
		i += len;
		size_t j = i;
		while (j < n && is_blank((unsigned char)s[j]))
			j++;
		if (!separated || j >= n || s[j] != '=')
			continue;
		j++;
		while (j < n && is_blank((unsigned char)s[j]))
			j++;
		if (j >= n)
			return NULL;
		size_t vstart = j, vend;
		if (s[j] == '"' || s[j] == '\'' || s[j] == '`') {
			char q = s[j];
			vstart = j + 1;
			vend = vstart;
			while (vend < n && s[vend] != q)
				vend++;
		} else {
			vend = j;
			while (vend < n && !is_blank((unsigned char)s[vend]) && s[vend] != '>')
				vend++;
		}
		if (is_event_attr(name) && vend > vstart)
			return "event handler attribute";
		if (LISTED(name, url_attributes) && script_url_at(s, vend, vstart))
			return "script url attribute";
		if (strcmp(name, "style") == 0 &&
		    (contains_ci(s + vstart, vend - vstart, "expression(") ||
		     contains_ci(s + vstart, vend - vstart, "javascript:") ||
		     contains_ci(s + vstart, vend - vstart, "-moz-binding") ||
		     contains_ci(s + vstart, vend - vstart, "behavior:")))
			return "style with script";
		if (in_tag && strcmp(name, "srcdoc") == 0)
			return "srcdoc attribute";
		i = vend;
	}
	return NULL;
}

static const char *scan_tags(const char *s, size_t n)
{
	char name[40];
	for (size_t i = 0; i + 1 < n; i++) {
		if (s[i] != '<')
			continue;
		size_t j = i + 1;
		bool closing = false;
		if (s[j] == '/') {
			closing = true;
			j++;
		}
		if (j >= n || !is_alpha((unsigned char)s[j]))
			continue;
		size_t len = read_name(s, n, j, name, sizeof(name));
		if (LISTED(name, script_tags)) {
			/* "<style" and "<link" alone read as text too often: they need
			 * something after the name that continues a tag */
			size_t k = j + len;
			if (!closing || strcmp(name, "script") == 0) {
				if (k >= n || is_blank((unsigned char)s[k]) || s[k] == '>' || s[k] == '/')
					return closing ? "closing script tag" : "script-capable tag";
			}
		}
		if (closing)
			continue;
		const char *why = scan_attributes(s, n, j + len, true);
		if (why)
			return why;
	}
	return NULL;
}

/* A quote, ';', ')' or operator, then alert/prompt/confirm called. */
static const char *scan_script_string(const char *s, size_t n)
{
	char name[16];
	for (size_t i = 0; i < n; i++) {
		if (!is_alpha((unsigned char)s[i]) || (i > 0 && is_alpha((unsigned char)s[i - 1])))
			continue;
		size_t len = read_name(s, n, i, name, sizeof(name));
		if (!LISTED(name, sinks)) {
			i += len;
			continue;
		}
		size_t k = i + len;
		while (k < n && is_blank((unsigned char)s[k]))
			k++;
		if (k >= n || (s[k] != '(' && s[k] != '`'))
			continue;
		/* what precedes the call: a break out of a string or statement */
		size_t b = i;
		while (b > 0 && is_blank((unsigned char)s[b - 1]))
			b--;
		if (b == 0)
			continue;
		if (strchr("'\";)}-+*/|&,=(>[:", s[b - 1]) && s[b - 1] != '\0')
			return "script call after a break";
	}
	return NULL;
}

/* Whether some '(' or '`' follows a sink's name (blanks between): the
 * necessary part of scan_script_string's shape, found from the few call
 * bytes instead of from every word. */
static bool sink_called(const char *s, size_t n)
{
	for (size_t k = 0; k < n; k++) {
		/* the next '(' or backtick */
		const char *p = memchr(s + k, '(', n - k), *q = memchr(s + k, '`', n - k);
		if (!p && !q)
			return false;
		k = (size_t)((p && (!q || p < q) ? p : q) - s);
		size_t e = k;
		while (e > 0 && is_blank((unsigned char)s[e - 1]))
			e--;
		for (size_t i = 0; i < sizeof(sinks) / sizeof(sinks[0]); i++) {
			size_t l = strlen(sinks[i]);
			size_t j = 0;
			while (j < l && e >= l && lower((unsigned char)s[e - l + j]) == (unsigned char)sinks[i][j])
				j++;
			if (j == l)
				return true;
		}
	}
	return false;
}

static bool detect(const char *s, size_t n, const char **why, bool shortcut)
{
	if (n > WAF_XSS_MAX_INPUT)
		n = WAF_XSS_MAX_INPUT;
	/* every shape needs one of these: a scheme's ':', a tag's '<', an
	 * attribute's '=', a call's '(' or backtick after a sink's name */
	bool colon = !shortcut || memchr(s, ':', n), tag = !shortcut || memchr(s, '<', n);
	bool attr = !shortcut || memchr(s, '=', n);
	const char *shape = NULL;
	if (colon && script_url_at(s, n, 0))
		shape = "script url";
	if (!shape && tag)
		shape = scan_tags(s, n);
	if (!shape && attr)
		shape = scan_attributes(s, n, 0, false);
	if (!shape && (!shortcut || sink_called(s, n)))
		shape = scan_script_string(s, n);
	if (why)
		*why = shape;
	return shape != NULL;
}

bool waf_xss_detect(const char *s, size_t n, const char **why)
{
	return detect(s, n, why, true);
}

bool waf_xss_detect_all(const char *s, size_t n, const char **why)
{
	return detect(s, n, why, false);
}
