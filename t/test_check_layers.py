"""scripts/check-layers: the include layering check of the lint stage
(docs/architecture.md "Layers"). Runs it on the real tree and on small trees
made here, each with one thing wrong."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "check-layers")


def run(root, *args):
    p = subprocess.run([sys.executable, SCRIPT, "--root", str(root), *args], capture_output=True, text=True,
                       timeout=60)
    return p.returncode, p.stdout + p.stderr


def tree(tmp_path, files, allow=None):
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if allow is not None:
        (tmp_path / "scripts").mkdir(exist_ok=True)
        (tmp_path / "scripts" / "layers.allow").write_text(allow)
    return tmp_path


# A tree that holds: protocol -> pipeline -> policies -> upstream -> transport -> runtime -> shared.
GOOD = {
    "src/client.c": '#include "client.h"\n#include "route.h"\n#include "tls_io.h"\n#include "log.h"\n',
    "src/client.h": '#include "request.h"\n#include "proxy.h"\n',
    "src/route.h": '#include "conf.h"\n',
    "src/proxy.h": '#include "reason.h"\n',
    "src/proxy.c": '#include "proxy.h"\n#include "pool.h"\n',
    "src/pool.h": '#include "io.h"\n',
    "src/io.h": '#include "io_types.h"\n',
    "src/io_types.h": "",
    "src/tls_io.h": "",
    "src/tls_io.c": '#include "tls_io.h"\n#include "worker.h"\n#include <openssl/ssl.h>\n',
    "src/worker.h": '#include "io_types.h"\n',
    "src/worker.c": '#include "worker.h"\n#include "client.h"\n#include "tls_accept.h"\n',
    "src/tls_accept.h": "",
    "src/conf.h": "",
    "src/request.h": '#include "reason.h"\n',
    "src/reason.h": "",
    "src/log.h": "",
    "modules/ratelimit.c": '#include "module.h"\n#include "worker.h"\n',
    "src/module.h": '#include "conf.h"\n#include "request.h"\n',
}


def check(tmp_path, changes=None, allow=""):
    """Runs the check on GOOD with changes: {path: text to add to it}."""
    files = dict(GOOD)
    for name, text in (changes or {}).items():
        files[name] = files.get(name, "") + text
    return run(tree(tmp_path, files, allow=allow))


def test_the_real_tree_holds():
    rc, out = run(ROOT)
    assert rc == 0, out
    assert "check-layers: ok:" in out
    # the allowlist is printed as a count, and each of its edges by name
    line = [x for x in out.splitlines() if x.startswith("check-layers:")][0]
    count = int(line.split(" allowlisted edges")[0].rsplit(" ", 1)[1])
    assert count == out.count("  allowlisted: ")


def test_a_tree_that_holds_passes(tmp_path):
    rc, out = run(tree(tmp_path, GOOD, allow=""))
    assert rc == 0, out
    assert "0 problems, 0 allowlisted edges" in out


def test_transport_including_protocol_fails(tmp_path):
    rc, out = check(tmp_path, {"src/tls_accept.c": '#include "tls_accept.h"\n#include "worker.h"\n#include "client.h"\n'})
    assert rc == 1
    assert "src/tls_accept.c:3: includes src/client.h: transport must not include protocol" in out
    assert "1 problems" in out


def test_upstream_including_protocol_through_a_header_fails(tmp_path):
    rc, out = check(tmp_path, {"src/pool.h": '#include "client.h"\n'})
    assert rc == 1
    assert "src/pool.h:2: includes src/client.h: upstream must not include protocol" in out


def test_a_shared_header_includes_only_shared_headers(tmp_path):
    rc, out = check(tmp_path, {"src/request.h": '#include "worker.h"\n'})
    assert rc == 1
    assert "src/request.h:2: includes src/worker.h: shared must not include runtime" in out


def test_an_allowlisted_edge_passes_and_is_counted(tmp_path):
    allow = "# comment\n\nsrc/proxy.c -> src/client.h : proxy answers the client by name; removed by the exchange\n"
    rc, out = check(tmp_path, {"src/proxy.c": '#include "client.h"\n'}, allow=allow)
    assert rc == 0, out
    assert "1 allowlisted edges still to remove" in out
    assert "allowlisted: src/proxy.c -> src/client.h : proxy answers the client by name" in out


def test_a_stale_allowlist_entry_fails(tmp_path):
    allow = "src/proxy.c -> src/client.h : proxy answers the client by name; removed by the exchange\n"
    rc, out = run(tree(tmp_path, GOOD, allow=allow))
    assert rc == 1
    assert "layers.allow:1: src/proxy.c -> src/client.h no longer occurs: remove the line" in out


def test_an_allowlist_entry_that_is_no_violation_fails(tmp_path):
    allow = "src/client.c -> src/route.h : not needed\n"
    rc, out = run(tree(tmp_path, GOOD, allow=allow))
    assert rc == 1
    assert "src/client.c -> src/route.h is not a violation (protocol may include pipeline)" in out


@pytest.mark.parametrize("line", ["src/proxy.c -> src/client.h", "src/proxy.c src/client.h : why",
                                  "src/proxy.c -> src/client.h :"])
def test_an_allowlist_entry_needs_both_ends_and_a_reason(tmp_path, line):
    rc, out = check(tmp_path, {"src/proxy.c": '#include "client.h"\n'}, allow=line + "\n")
    assert rc == 1
    assert "expected 'FROM -> TO : why; what removes it'" in out


def test_a_file_without_a_layer_fails(tmp_path):
    rc, out = check(tmp_path, {"src/newthing.c": '#include "log.h"\n'})
    assert rc == 1
    assert "src/newthing.c: no layer: add it to LAYERS in scripts/check-layers" in out


def test_a_low_header_declaring_a_function_defined_above_fails(tmp_path):
    # module.h (policies) declares what client.c (protocol) defines: a module
    # calling it calls up by name, whatever the includes say
    rc, out = check(tmp_path, {"src/module.h": "void pipeline_resume(struct request *r,\n                     int result);\n",
                               "src/client.c": "void pipeline_resume(struct request *r,\n                     int result)\n{\n}\n"})
    assert rc == 1
    assert "src/module.h:3: declares pipeline_resume(), which src/client.c defines" in out
    # a missing allowlist file is an empty one
    rc, out = run(tmp_path, "--allow", str(tmp_path / "none"))
    assert rc == 1
    allow = "src/module.h -> src/client.c : resumed by name; removed by a resume callback\n"
    rc, out = run(tree(tmp_path, {}, allow=allow))
    assert rc == 0, out
    assert "1 allowlisted edges" in out


def test_a_header_and_the_files_of_its_own_module_may_differ(tmp_path):
    # worker.h (runtime) declares helpers that worker.c (process) defines
    rc, out = check(tmp_path, {"src/worker.h": "void worker_conn_closed(struct worker *w);\n",
                               "src/worker.c": "void worker_conn_closed(struct worker *w)\n{\n}\n"})
    assert rc == 0, out


def test_a_c_file_declaring_another_files_function_itself_fails(tmp_path):
    # tls_io.c reaching client.c without including client.h
    rc, out = check(tmp_path, {"src/tls_io.c": "void client_accept_bev(void *w,\n                       void *bev);\nextern int client_count;\n",
                               "src/client.c": "void client_accept_bev(void *w, void *bev)\n{\n}\nint client_count;\n"})
    assert rc == 1
    assert "src/tls_io.c:4: declares client_accept_bev() itself: include the header" in out
    assert "src/tls_io.c:6: extern int client_count;: include the header" in out


def test_a_c_file_may_declare_its_own_functions_ahead(tmp_path):
    rc, out = check(tmp_path, {"src/tls_io.c": "void tls_io_helper(void);\nvoid tls_io_helper(void)\n{\n}\n"})
    assert rc == 0, out


def test_files_in_subdirectories_are_checked(tmp_path):
    # a file moved into a folder of its own is still found, and needs a layer
    rc, out = check(tmp_path, {"src/http/newcodec.c": '#include "log.h"\n'})
    assert rc == 1
    assert "src/http/newcodec.c: no layer" in out
    # one in a module's folder is checked like the others, and a header there
    # is found by its name, as the -I paths would
    rc, out = check(tmp_path / "b", {"modules/lua/waf.c": '#include "waf.h"\n#include "client.h"\n',
                               "modules/lua/waf.h": '#include "request.h"\n',
                               "src/route.c": '#include "route.h"\n#include "waf.h"\n'})
    assert rc == 1, out
    assert "modules/lua/waf.c:2: includes src/client.h: policies must not include protocol" in out
    assert "1 problems" in out
