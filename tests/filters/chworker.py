"""A chDB worker process for the filter tests.

chDB is one embedded engine per process, bound to one path; running it in a child
process keeps the tests independent of any other chDB user in the pytest process.
Protocol: one JSON object per line on stdin, one JSON reply per line on stdout.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def main() -> None:
    from chdb import session

    sess = session.Session(":memory:")
    for line in sys.stdin:
        req = json.loads(line)
        reply: dict[str, Any]
        try:
            op = req["op"]
            if op == "exec":
                sess.query(req["sql"], "CSV", params=req.get("params") or {})
                reply = {"ok": True}
            elif op == "insert":
                data = "\n".join(json.dumps(r) for r in req["rows"])
                sess.query(f"INSERT INTO {req['table']} FORMAT JSONEachRow\n{data}\n", "CSV")
                reply = {"ok": True}
            elif op == "query":
                res = sess.query(req["sql"], "JSONEachRow", params=req.get("params") or {})
                rows = [json.loads(x) for x in str(res).splitlines() if x.strip()]
                reply = {"ok": True, "rows": rows}
            else:
                reply = {"ok": False, "error": f"unknown op {op}"}
        except Exception as exc:  # reported to the test, which decides
            reply = {"ok": False, "error": str(exc)}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    sess.close()


if __name__ == "__main__":
    main()
