"""Bad input, one table: each case through the real CLI answers with one clear line, the
right exit code (2 input, 4 environment), no traceback, and the state file untouched."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import ROOT

from kubelab.state import ExerciseProgress, StateStore

FIXTURES = ROOT / "tests" / "fixtures" / "lessons"
LESSON = "istio-traffic-splitting"


def _files(tmp: Path) -> dict[str, str]:
    (tmp / "deep.yaml").write_text("[" * 20000 + "]" * 20000)
    (tmp / "loop").mkdir()
    (tmp / "loop" / "self").symlink_to("../loop")
    (tmp / "binary").write_bytes(b"\x00\x01\x02\xffnot yaml")
    (tmp / "folder").mkdir()
    (tmp / "typo.yaml").write_text("provder: kind\n")
    (tmp / "a-file").write_text("not a folder\n")
    (tmp / "sa.json").write_text(json.dumps(_service_account()))
    (tmp / "roster.csv").write_text("id,name,email\nana,Ana,ana@example.org\n")
    rows = "".join(f"s{i},Student {i},s{i}@example.org\n" for i in range(10000))
    (tmp / "big-roster.csv").write_text("id,name,email\n" + rows)
    return {name: str(tmp / name) for name in ("loop", "binary", "folder")} | {
        "sa": str(tmp / "sa.json"),
        "deep": str(tmp / "deep.yaml"),
        "typo": str(tmp / "typo.yaml"),
        "a-file": str(tmp / "a-file"),
        "roster": str(tmp / "roster.csv"),
        "big-roster": str(tmp / "big-roster.csv"),
    }


def _service_account() -> dict[str, str]:
    """A Google service account key of the real format (its own RSA key), whose token
    endpoint is a closed loopback port."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "type": "service_account",
        "project_id": "kubelab-bad-inputs",
        "private_key_id": "1",
        "private_key": pem,
        "client_email": "kubelab@kubelab-bad-inputs.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "http://127.0.0.1:9/token",
    }


# (id, args, extra environment, exit code, text of the first line of stderr)
CASES: list[tuple[str, list[str], dict[str, str], int, str]] = [
    ("unknown lesson", ["up", "nope"], {}, 2, "no lesson 'nope'"),
    ("unknown provider", ["up", LESSON, "-p", "nope"], {}, 2, "unknown provider 'nope'"),
    ("out without dry-run", ["up", LESSON, "--out", "x"], {}, 2, "--out is only used with"),
    ("tls without domain", ["up", LESSON, "--tls"], {}, 2, "--tls needs --domain and --email"),
    ("charts on the sandbox", ["up", LESSON, "--charts", "."], {}, 2, "--charts is for"),
    ("config typo", ["up", LESSON, "--dry-run"], {"KUBELAB_CONFIG": "{typo}"}, 2, "unknown key"),
    ("config binary", ["up", LESSON, "--dry-run"], {"KUBELAB_CONFIG": "{binary}"}, 2, "config"),
    ("20,000-deep YAML", ["validate", "{deep}"], {}, 2, "nested too deeply"),
    ("symlink loop", ["validate", "{loop}"], {}, 2, "no lesson.yaml found"),
    ("binary lesson", ["validate", "{binary}"], {}, 2, "cannot read file"),
    ("missing path", ["validate", "nothing-here"], {}, 2, "no such file or folder"),
    ("files outside", ["validate", str(FIXTURES / "files-outside")], {}, 2, "is outside"),
    ("join a binary", ["class", "join", "{binary}"], {}, 2, "is not a kubelab class"),
    ("join a folder", ["class", "join", "{folder}"], {}, 2, "Is a directory"),
    ("join nothing", ["class", "join", "none.kubeconfig"], {}, 2, "No such file"),
    (
        "join a lesson file",
        ["class", "join", str(FIXTURES / "bad-yaml" / "lesson.yaml")],
        {},
        2,
        "is not a kubelab class",
    ),
    (
        "nodes -1",
        ["cluster", "create", "-p", "hetzner", "--nodes", "-1", "-y"],
        {},
        2,
        "--nodes -1: a hetzner cluster has 0 to 50",
    ),
    (
        "nodes 10000",
        ["cluster", "create", "-p", "gke", "--nodes", "10000", "-y"],
        {},
        2,
        "--nodes 10000: a gke cluster has 1 to 50",
    ),
    (
        "no token",
        ["cluster", "create", "-p", "hetzner", "-y"],
        {"HCLOUD_TOKEN": ""},
        4,
        "HCLOUD_TOKEN is not set",
    ),
    (
        "token with a space",
        ["cluster", "create", "-p", "hetzner", "-y"],
        {"HCLOUD_TOKEN": "abc def"},
        4,
        "HCLOUD_TOKEN has a space or line break at position 4",
    ),
    (
        "token with a line break inside",
        ["cluster", "leftovers", "-p", "hetzner"],
        {"HCLOUD_TOKEN": "abc\ndef"},
        4,
        "HCLOUD_TOKEN has a space or line break",
    ),
    (
        "non-Latin token",
        ["cluster", "create", "-p", "hetzner", "-y"],
        {"HCLOUD_TOKEN": "tok\u0435n"},
        4,
        "HCLOUD_TOKEN has a character that is not ASCII",
    ),
    (
        "GKE API unreachable",
        ["cluster", "create", "-p", "gke", "-y"],
        {"GOOGLE_APPLICATION_CREDENTIALS": "{sa}", "KUBELAB_GKE_ENDPOINT": "127.0.0.1:9"},
        4,
        "cannot reach the GKE API at 127.0.0.1:9 while trying to create cluster kubelab",
    ),
    (
        "GKE leftovers, API unreachable",
        ["cluster", "leftovers", "-p", "gke"],
        {"GOOGLE_APPLICATION_CREDENTIALS": "{sa}", "KUBELAB_GKE_ENDPOINT": "127.0.0.1:9"},
        4,
        "cannot reach the GKE API at 127.0.0.1:9",
    ),
    (
        # The newline is not the problem (it is trimmed); the unreachable API is, at once.
        "token with a trailing newline, API unreachable",
        ["cluster", "leftovers", "-p", "hetzner"],
        {"HCLOUD_TOKEN": "abcdefgh\n"},
        4,
        "cannot reach the Hetzner API at http://127.0.0.1:9",
    ),
    (
        "dashboards exposed over plain HTTP",
        ["up", LESSON, "-p", "existing", "--domain", "lab.example.org", "--expose-dashboards"],
        {},
        2,
        "--expose-dashboards needs --domain and --tls",
    ),
    ("open an unknown dashboard", ["open", "grafana"], {}, 2, "cannot open 'grafana'"),
    (
        "a Kiali token of a lesson not up",
        ["open", "kiali", "--token-only"],
        {},
        2,
        "is not running, so it has no kiali to open",
    ),
    ("home is a file", ["hint"], {"KUBELAB_HOME": "{a-file}"}, 4, "File exists"),
    ("check a lesson not up", ["check"], {}, 2, "is not running, so there is nothing to check"),
    ("solve an unknown exercise", ["solve", "x"], {}, 2, "has no exercise 'x'"),
    ("check an unknown exercise", ["check", "x"], {}, 2, "has no exercise 'x'"),
    ("hint of an unknown exercise", ["hint", "x"], {}, 2, "has no exercise 'x'"),
    (
        "exercise out of range",
        ["exercise", "99", "--lesson", LESSON],
        {},
        2,
        "has exercises 1 to 6, not 99",
    ),
    ("hint of unknown lesson", ["hint", "--lesson", "nope"], {}, 2, "no lesson 'nope'"),
    ("show unknown lesson", ["show", "nope"], {}, 2, "no lesson 'nope'"),
    ("progress of unknown lesson", ["progress", "--lesson", "nope"], {}, 2, "no lesson 'nope'"),
    ("grade a lesson not up", ["grade", LESSON], {}, 4, "is not up"),
    (
        "class of a lesson not up",
        ["class", "create", LESSON, "--roster", "{roster}"],
        {},
        4,
        "is not up",
    ),
    (
        "a roster that is a folder",
        ["class", "create", LESSON, "--roster", "{folder}"],
        {},
        2,
        "is a folder",
    ),
    (
        "a roster of 10,000 students",
        ["class", "create", LESSON, "--roster", "{big-roster}"],
        {},
        2,
        "lists 10000 students; a class has at most 200",
    ),
    (
        "a roster that is not text",
        ["class", "create", LESSON, "--roster", "{binary}"],
        {},
        2,
        "is not UTF-8 text",
    ),
    ("typo of a command", ["chek"], {}, 2, "Usage:"),
    ("unknown language", ["--lang", "xx", "lessons"], {}, 2, "Usage:"),
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad-inputs")
    home = tmp / "home"
    _with_progress(home)
    return tmp, home, _files(tmp)


@pytest.mark.parametrize(
    ("case", "args", "extra", "code", "first"), CASES, ids=[c[0] for c in CASES]
)
def test_bad_input(lab, case, args, extra, code, first):
    tmp, home, files = lab
    before = (home / "state.json").read_bytes()
    # kubelab's cache (results of pure work, such as a lesson's values found valid when it
    # loads) is no state: a command may fill it before it refuses its arguments.
    listing = sorted(p.name for p in home.iterdir() if p.name != "cache")
    env = {
        **{k: v for k, v in os.environ.items() if k != "HCLOUD_TOKEN"},
        "KUBELAB_HOME": str(home),
        "HCLOUD_ENDPOINT": "http://127.0.0.1:9",  # never the real API
        "COLUMNS": "200",
        **{k: v.format(**files) for k, v in extra.items()},
    }
    proc = subprocess.run(
        [sys.executable, "-m", "kubelab", *[a.format(**files) for a in args]],
        cwd=tmp,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "internal error" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines and first in "\n".join(lines[:2]), proc.stderr
    assert (home / "state.json").read_bytes() == before  # untouched
    # nothing half-written
    assert sorted(p.name for p in home.iterdir() if p.name != "cache") == listing


def test_the_table_is_large():
    assert len(CASES) >= 40


def _check_against(tmp_path: Path, cluster: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`kubelab check split-50-50 -o json` of a lesson up on the cluster ``cluster`` (a
    kubeconfig's cluster entry), in a home of its own."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": cluster}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    home = tmp_path / "home"
    with StateStore(home / "state.json").transaction() as state:
        record = state.lesson(LESSON)
        record.provider, record.steps_done = "existing", ["deploy"]
        record.details = {"kubeconfig": str(kubeconfig), "namespace": "istio"}
    return subprocess.run(
        [sys.executable, "-m", "kubelab", "check", "split-50-50", "-o", "json"],
        env={**os.environ, "KUBELAB_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_check_against_a_dead_api_errors_within_10_seconds(tmp_path):
    import json
    import socket
    import time

    with socket.socket() as sock:  # a port nothing listens on: connections are refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    proc = _check_against(tmp_path, {"server": f"https://127.0.0.1:{port}"})
    took = time.monotonic() - started
    assert proc.returncode == 1, proc.stderr
    checks = json.loads(proc.stdout)["checks"]
    assert len(checks) == 2 and {c["status"] for c in checks} == {"error"}
    assert all("cannot reach the Kubernetes API" in c["message"] for c in checks)
    assert took < 10, took  # was 87 s: each check waited out its own retries


def _expired_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 that expired yesterday, and its key."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=30))
        .not_valid_after(now - dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "expired.crt", folder / "expired.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_an_expired_api_certificate_is_said_so_not_ssl_error_0(tmp_path):
    import base64
    import http.server
    import ssl
    import threading
    import time

    cert_file, key_file = _expired_certificate(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        ca = base64.b64encode(cert_file.read_bytes()).decode()
        server_url = f"https://127.0.0.1:{server.server_address[1]}"
        started = time.monotonic()
        proc = _check_against(tmp_path, {"server": server_url, "certificate-authority-data": ca})
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 1, proc.stderr
    checks = json.loads(proc.stdout)["checks"]
    assert {c["status"] for c in checks} == {"error"}
    for check in checks:
        assert "TLS certificate is not trusted (certificate has expired)" in check["message"]
        assert "SSLError" not in check["message"]
    assert time.monotonic() - started < 10  # a certificate problem is not retried


@contextlib.contextmanager
def _small_filesystem(where: Path, size: str = "256k") -> Iterator[Path]:
    """A real tmpfs of ``size`` mounted at ``where`` (root with CAP_SYS_ADMIN, as on the
    test machines), unmounted afterwards whatever happens."""
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip()}): needs root")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], timeout=30, check=False)


def _kubelab(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kubelab", *args],
        env={**os.environ, "KUBELAB_HOME": str(home), "COLUMNS": "200"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _with_progress(home: Path) -> bytes:
    """A state file with a student's progress in it; its bytes."""
    with StateStore(home / "state.json").transaction() as state:
        state.progress[LESSON] = {"split-50-50": ExerciseProgress(status="failed", attempts=2)}
    return (home / "state.json").read_bytes()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small filesystem needs root")
def test_a_full_disk_is_said_so_and_the_state_is_kept(tmp_path):
    """A real ENOSPC (a full tmpfs as KUBELAB_HOME): a write to a full disk names no file,
    and once read as a network failure ("cannot reach the network service")."""
    with _small_filesystem(tmp_path / "home") as home:
        before = _with_progress(home)
        filler = subprocess.run(
            ["dd", "if=/dev/zero", f"of={home / 'filler'}", "bs=4k"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert b"No space left on device" in filler.stderr
        for args in (["hint", "--lesson", LESSON], ["up", LESSON]):
            proc = _kubelab(home, *args)
            assert proc.returncode == 4, (args, proc.stderr)
            lines = proc.stderr.splitlines()
            assert lines[0] == "error: No space left on device", proc.stderr
            assert lines[1].startswith("hint: Free some disk space where kubelab writes"), lines
            assert "Traceback" not in proc.stderr and "network" not in proc.stderr
            assert (home / "state.json").read_bytes() == before
        # Reading still works: the student can read the exercise.
        assert _kubelab(home, "exercise", "2", "--lesson", LESSON).returncode == 0
        assert not (home / "sandbox").exists()  # nothing was started


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small filesystem needs root")
def test_a_read_only_home_is_said_so_with_where_kubelab_writes(tmp_path):
    """A real EROFS (root writes through file modes, not through a read-only mount)."""
    with _small_filesystem(tmp_path / "home") as home:
        before = _with_progress(home)
        subprocess.run(["mount", "-o", "remount,ro", str(home)], timeout=30, check=True)
        for args, lock in (
            (["hint", "--lesson", LESSON], "state.json.lock"),
            (["up", LESSON], "lifecycle.lock"),
        ):
            proc = _kubelab(home, *args)
            assert proc.returncode == 4, (args, proc.stderr)
            lines = proc.stderr.splitlines()
            assert lines[0] == f"error: Read-only file system: {home / lock}", proc.stderr
            assert f"kubelab keeps its files in {home}" in lines[1], lines
            assert "Traceback" not in proc.stderr
            assert (home / "state.json").read_bytes() == before
        assert _kubelab(home, "exercise", "2", "--lesson", LESSON).returncode == 0
