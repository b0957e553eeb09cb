"""The sandbox store at scale, through its HTTP API as kubectl and the client use it.

Run by hand: ``python benchmarks/bench_store.py [--pods 8000] [--runs 3]``. It starts the
sandbox API server on 127.0.0.1 (no controller: the objects are only stored) and measures:

* a full LIST of N pods, against the same LIST in pages of 500 (kubectl's default
  ``--chunk-size``, every page fetched through ``continue``). Budget: paged at most 2x full.
* deleting N/2 pods one by one (DELETE requests in a loop), each delete looking for
  dependents. Budget: at most 2 s, store side.
* a LIST of one namespace of 50 pods, while the other namespaces hold nothing, then N
  pods. Budget: the same time (within noise), whatever the other namespaces hold.

Everything runs on loopback and stops by itself.
"""

from __future__ import annotations

import argparse
import json
import ssl
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def pod(name: str, namespace: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "app", "image": "bench:1"}]},
    }


class Client:
    def __init__(self, api: Any) -> None:
        from kubelab.sandbox.threaded import TOKEN

        self.base = api.server.url
        self.context = ssl.create_default_context()
        self.context.check_hostname = False
        self.context.verify_mode = ssl.CERT_NONE
        self.headers = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"}

    def request(self, method: str, path: str) -> dict[str, Any]:
        req = urllib.request.Request(self.base + path, method=method, headers=self.headers)
        with urllib.request.urlopen(req, context=self.context, timeout=120) as answer:
            data: dict[str, Any] = json.loads(answer.read())
        return data

    def list_all(self, path: str, limit: int = 0) -> int:
        count, token = 0, ""
        while True:
            query = f"?limit={limit}" if limit else ""
            if token:
                query += f"&continue={token}"
            page = self.request("GET", path + query)
            count += len(page["items"])
            token = page["metadata"].get("continue", "")
            if not token:
                return count


def timed(fn: Any) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def one_run(pods: int) -> dict[str, float]:
    from kubelab.sandbox import resources
    from kubelab.sandbox.threaded import ThreadedApi

    with tempfile.TemporaryDirectory() as folder:
        api = ThreadedApi(Path(folder))
        try:
            client = Client(api)
            for ns in ("bench", "small"):
                api.call(api.store.create, resources.NAMESPACES, {"metadata": {"name": ns}})
            for i in range(50):
                api.call(api.store.create, resources.PODS, pod(f"p{i}", "small"))
            small = "/api/v1/namespaces/small/pods"
            lonely = statistics.median(timed(lambda: client.list_all(small)) for _ in range(20))

            def fill() -> None:
                for i in range(pods):
                    api.store.create(resources.PODS, pod(f"pod-{i:05d}", "bench"))

            api.call(fill)
            crowded = statistics.median(timed(lambda: client.list_all(small)) for _ in range(20))
            everything = "/api/v1/namespaces/bench/pods"
            assert client.list_all(everything) == pods
            full = timed(lambda: client.list_all(everything))
            paged = timed(lambda: client.list_all(everything, limit=500))

            def delete_half() -> None:
                for i in range(pods // 2):
                    api.store.delete(resources.PODS, "bench", f"pod-{i:05d}")

            deleted = api.run(_timed_on_loop(delete_half))
            over_http = timed(
                lambda: [
                    client.request("DELETE", f"{everything}/pod-{i:05d}")
                    for i in range(pods // 2, pods // 2 + 500)
                ]
            )
        finally:
            api.close()
    return {
        "full": full,
        "paged": paged,
        "delete": deleted,
        "delete_http_500": over_http,
        "ns_alone": lonely,
        "ns_crowded": crowded,
    }


async def _timed_on_loop(fn: Any) -> float:
    return timed(fn)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=8000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs = [one_run(args.pods) for _ in range(args.runs)]

    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    print(f"{args.pods} pods, {args.runs} runs, medians:")
    print(f"  full LIST               {med('full'):.3f} s")
    ratio = med("paged") / med("full")
    print(f"  paged LIST (500)        {med('paged'):.3f} s  = {ratio:.2f}x full")
    print(f"  delete {args.pods // 2} pods (store)  {med('delete'):.3f} s")
    print(f"  500 DELETE requests     {med('delete_http_500'):.3f} s")
    print(f"  LIST of 50, alone       {1000 * med('ns_alone'):.1f} ms")
    print(
        f"  LIST of 50, beside {args.pods} {1000 * med('ns_crowded'):.1f} ms"
        f"  = {med('ns_crowded') / med('ns_alone'):.2f}x"
    )
    ok = (
        med("paged") <= 2 * med("full")
        and med("delete") <= 2.0
        and med("ns_crowded") <= 1.5 * med("ns_alone")
    )
    print("budgets:", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
