/* waf_cli.h - `sluice waf test [--paranoia N] [--threshold N] [--rules DIR] FILE...`
 * (docs/waf.md, "Testing rules offline").
 *
 * Replays requests from files against the rule set without a gateway: a
 * file is either one raw HTTP/1.1 request (request line, header lines, an
 * empty line, the body), or JSON lines, one request per line:
 * {"method", "path" (the request target, query included), "headers" (an
 * object), "body" (a string), "expect" ("block" or "pass"), optional "class"
 * and "name"}. Prints per request the verdict, the anomaly score and the
 * matched rule ids; with --summary, blocked counts per class and expectation.
 * Exit status: 0 all expectations met, 1 some failed, 2 usage, input or rule
 * errors (every error printed as FILE:LINE: message).
 */
#ifndef SLUICE_WAF_CLI_H
#define SLUICE_WAF_CLI_H

int waf_cli_main(int argc, char **argv);

#endif
