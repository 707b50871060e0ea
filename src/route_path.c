/* route_path.c - the path routes match: see route_path.h. */
#include "route_path.h"

#include <stdbool.h>
#include <string.h>

static int hex_value(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
}

static bool unreserved_or_slash(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
	       c == '_' || c == '~' || c == '/';
}

size_t route_path_normalize(const char *path, size_t len, char *out)
{
	if (len == 0 || path[0] != '/') {
		memcpy(out, path, len);
		return len;
	}
	/* 1. decode: never longer than the input */
	size_t n = 0;
	for (size_t i = 0; i < len; i++) {
		int hi, lo;
		if (path[i] == '%' && i + 2 < len && (hi = hex_value((unsigned char)path[i + 1])) >= 0 &&
		    (lo = hex_value((unsigned char)path[i + 2])) >= 0 && unreserved_or_slash((unsigned char)(hi * 16 + lo))) {
			out[n++] = (char)(hi * 16 + lo);
			i += 2;
		} else {
			out[n++] = path[i];
		}
	}
	/* 2. segments, in place: what is written (w) never passes what is read (i) */
	size_t w = 0, i = 0;
	while (i < n) {
		while (i < n && out[i] == '/') /* at a '/': merge the run */
			i++;
		size_t seg = i;
		while (i < n && out[i] != '/')
			i++;
		size_t seg_len = i - seg;
		bool last = i >= n;
		if (seg_len == 1 && out[seg] == '.') {
			if (last)
				out[w++] = '/';
		} else if (seg_len == 2 && out[seg] == '.' && out[seg + 1] == '.') {
			while (w > 0 && out[w - 1] != '/') /* drop the last segment and its '/' */
				w--;
			if (w > 0)
				w--;
			if (last)
				out[w++] = '/';
		} else {
			out[w++] = '/';
			memmove(out + w, out + seg, seg_len);
			w += seg_len;
		}
	}
	if (w == 0)
		out[w++] = '/';
	return w;
}
