"""Real Kubernetes control planes for tests and the demo: etcd + kube-apiserver on loopback.

The binaries come from pinned Go modules (hack/testenv.sh builds them into .cache/bin). One
etcd process serves several apiservers, each under its own ``--etcd-prefix``, so every
apiserver is an independent cluster (its own namespaces, CRDs, RBAC) at the cost of one etcd.

Fault tests stop and start an apiserver on the same port with the same PKI (clients keep
their kubeconfig), restart etcd on its data directory, or freeze etcd with SIGSTOP so the
apiservers in front of it answer with errors and timeouts until it is resumed.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REPO_ROOT = Path(__file__).resolve().parents[3]
STARTUP_TIMEOUT_S = 90.0
CRD_ESTABLISHED_TIMEOUT_S = 30.0
STOP_GRACE_S = 10.0
UPSTREAM_CRD_SETS = frozenset(
    {"gateway-api", "inference-extension", "cluster-api", "cluster-api-templates", "karpenter"}
)
FIELD_MANAGER = "crossfade-testenv"


class ControlPlaneError(RuntimeError):
    """The test control plane could not be built or started; the message says why."""


def cache_dir() -> Path:
    """Return the git-ignored cache holding Go builds, binaries and upstream CRDs."""
    return Path(os.environ.get("CROSSFADE_CACHE_DIR", REPO_ROOT / ".cache"))


def ensure_binaries() -> Path:
    """Build (or reuse) kube-apiserver, etcd and helm; return the directory holding them."""
    result = subprocess.run(
        [str(REPO_ROOT / "hack" / "testenv.sh")],
        check=False,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise ControlPlaneError(f"hack/testenv.sh failed:\n{result.stderr[-4000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


def upstream_crds(name: str) -> list[Path]:
    """Return the upstream CRD files of one set, copied from its pinned Go module."""
    if name not in UPSTREAM_CRD_SETS:
        raise ValueError(f"unknown CRD set {name!r}; known: {sorted(UPSTREAM_CRD_SETS)}")
    result = subprocess.run(
        [str(REPO_ROOT / "hack" / "upstream-crds.sh")],
        check=False,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise ControlPlaneError(f"hack/upstream-crds.sh failed:\n{result.stderr[-4000:]}")
    return sorted((Path(result.stdout.strip().splitlines()[-1]) / name).glob("*.yaml"))


def free_port() -> int:
    """Return a loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Credentials:
    """PEM files of one test PKI: a CA, the apiserver's serving pair, an admin client pair."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    service_account_key: Path
    service_account_pub: Path


def _write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _issue(
    *,
    subject: x509.Name,
    key: rsa.RSAPrivateKey,
    issuer: x509.Name,
    issuer_key: rsa.RSAPrivateKey,
    is_ca: bool = False,
    sans: Sequence[x509.GeneralName] = (),
    client: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    if not is_ca:
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_credentials(directory: Path) -> Credentials:
    """Create a throwaway PKI for one apiserver under ``directory``."""
    import ipaddress

    directory.mkdir(parents=True, exist_ok=True)

    def new_key() -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    ca_key, serving_key, admin_key, sa_key = new_key(), new_key(), new_key(), new_key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "crossfade-testenv-ca")])
    ca = _issue(subject=ca_name, key=ca_key, issuer=ca_name, issuer_key=ca_key, is_ca=True)
    serving = _issue(
        subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
        key=serving_key,
        issuer=ca_name,
        issuer_key=ca_key,
        sans=[
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ],
    )
    admin = _issue(
        subject=x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                x509.NameAttribute(NameOID.COMMON_NAME, "crossfade-test-admin"),
            ]
        ),
        key=admin_key,
        issuer=ca_name,
        issuer_key=ca_key,
        client=True,
    )
    creds = Credentials(
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        admin_cert=directory / "admin.crt",
        admin_key=directory / "admin.key",
        service_account_key=directory / "sa.key",
        service_account_pub=directory / "sa.pub",
    )
    for cert, path in (
        (ca, creds.ca_cert),
        (serving, creds.serving_cert),
        (admin, creds.admin_cert),
    ):
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(creds.ca_key, ca_key)
    _write_key(creds.serving_key, serving_key)
    _write_key(creds.admin_key, admin_key)
    _write_key(creds.service_account_key, sa_key)
    creds.service_account_pub.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return creds


@dataclass
class ManagedProcess:
    """A child process whose output goes to a log file, stopped with SIGTERM then SIGKILL."""

    name: str
    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self, *, append_log: bool = False) -> None:
        """Start the process; ``append_log`` keeps the log of an earlier run (restarts)."""
        log = self.log_path.open("ab" if append_log else "wb")
        self.process = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_GRACE_S)

    def kill(self) -> None:
        """SIGKILL at once, as a crash or an OOM kill: no graceful shutdown, no drain."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=STOP_GRACE_S)

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): its sockets stay open, nothing answers."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Undo ``pause`` (SIGCONT)."""
        self._signal(signal.SIGCONT)

    def _signal(self, signum: signal.Signals) -> None:
        if self.process is None or self.process.poll() is not None:
            raise ControlPlaneError(f"{self.name} is not running")
        os.killpg(self.process.pid, signum)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def peak_rss_kib(self) -> int | None:
        """Return the process's peak resident memory (VmHWM) in KiB, if still running."""
        if not self.alive() or self.process is None:
            return None
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        except FileNotFoundError:
            return None
        return None


def _wait_until(check: Any, *, timeout_s: float, what: str, process: ManagedProcess) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not process.alive():
            raise ControlPlaneError(f"{process.name} exited while {what}:\n{process.log_tail()}")
        if check():
            return
        time.sleep(0.2)
    raise ControlPlaneError(f"timed out after {timeout_s:.0f}s {what}:\n{process.log_tail()}")


@dataclass
class Etcd:
    """One etcd member on loopback ports with its own data directory."""

    binary: Path
    workdir: Path
    client_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def start(self) -> None:
        """Start etcd, or start it again on the same ports and data after ``stop``."""
        if self.process is not None and self.process.alive():
            return
        data_dir = self.workdir / "etcd-data"
        data_dir.mkdir(parents=True, exist_ok=True)
        restart = self.process is not None
        self.process = ManagedProcess(
            name="etcd",
            argv=[
                str(self.binary),
                "--name=crossfade-test",
                f"--data-dir={data_dir}",
                f"--listen-client-urls={self.url}",
                f"--advertise-client-urls={self.url}",
                f"--listen-peer-urls=http://127.0.0.1:{self.peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{self.peer_port}",
                f"--initial-cluster=crossfade-test=http://127.0.0.1:{self.peer_port}",
                "--unsafe-no-fsync=true",
                "--quota-backend-bytes=2147483648",
                "--log-level=warn",
            ],
            log_path=self.workdir / "etcd.log",
        )
        self.process.start(append_log=restart)
        _wait_until(
            self._healthy, timeout_s=STARTUP_TIMEOUT_S, what="starting etcd", process=self.process
        )

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:  # noqa: S310
                return bool(json.load(response).get("health") == "true")
        except (OSError, ValueError):
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def restart(self) -> None:
        """Stop etcd and start it again on the same ports and data directory."""
        self.stop()
        self.start()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Freeze etcd (SIGSTOP) for the ``with`` block, then resume it, whatever happens."""
        if self.process is None:
            raise ControlPlaneError("etcd was never started")
        self.process.pause()
        try:
            yield
        finally:
            self.process.resume()


@dataclass
class TestCluster:
    """One real kube-apiserver (a 'cluster') with an admin kubeconfig."""

    __test__ = False  # not a pytest test class

    name: str
    binary: Path
    etcd: Etcd
    workdir: Path
    port: int = field(default_factory=free_port)
    process: ManagedProcess | None = None
    credentials: Credentials | None = None

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def kubeconfig_path(self) -> Path:
        return self.workdir / "kubeconfig.yaml"

    def start(self) -> None:
        """Start the apiserver, or start it again after ``stop``.

        A restart keeps the port and the PKI, so kubeconfigs handed out before (to an
        operator, in Secrets) keep working.
        """
        if self.process is not None and self.process.alive():
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        restart = self.credentials is not None
        if self.credentials is None:
            self.credentials = make_credentials(self.workdir / "pki")
        creds = self.credentials
        self.process = ManagedProcess(
            name=f"kube-apiserver[{self.name}]",
            argv=[
                str(self.binary),
                f"--etcd-servers={self.etcd.url}",
                f"--etcd-prefix=/crossfade-test/{self.name}",
                f"--cert-dir={self.workdir / 'pki'}",
                f"--tls-cert-file={creds.serving_cert}",
                f"--tls-private-key-file={creds.serving_key}",
                f"--client-ca-file={creds.ca_cert}",
                f"--secure-port={self.port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={creds.service_account_pub}",
                f"--service-account-signing-key-file={creds.service_account_key}",
                "--authorization-mode=RBAC",
                "--enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,"
                "DefaultStorageClass,ResourceQuota,MutatingAdmissionWebhook,"
                "ValidatingAdmissionWebhook,ValidatingAdmissionPolicy",
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                "--enable-priority-and-fairness=false",
                "--allow-privileged=true",
                "--v=1",
            ],
            log_path=self.workdir / "kube-apiserver.log",
        )
        self.process.start(append_log=restart)
        _wait_until(
            self._ready,
            timeout_s=STARTUP_TIMEOUT_S,
            what=f"waiting for {self.name} /readyz",
            process=self.process,
        )
        self._write_kubeconfig()

    def ssl_context(self) -> ssl.SSLContext:
        """Return a TLS context that trusts the cluster's CA and presents the admin cert."""
        assert self.credentials is not None
        context = ssl.create_default_context(cafile=str(self.credentials.ca_cert))
        context.load_cert_chain(str(self.credentials.admin_cert), str(self.credentials.admin_key))
        return context

    def _ready(self) -> bool:
        try:
            request = urllib.request.Request(f"{self.server}/readyz")  # noqa: S310
            with urllib.request.urlopen(request, timeout=2, context=self.ssl_context()) as resp:  # noqa: S310
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def kubeconfig_dict(self, *, context_name: str | None = None) -> dict[str, Any]:
        """Return an admin kubeconfig with certificates inlined (usable as a Secret value)."""
        assert self.credentials is not None
        import base64

        def b64(path: Path) -> str:
            return base64.b64encode(path.read_bytes()).decode()

        name = context_name or self.name
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": name,
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": b64(self.credentials.ca_cert),
                    },
                }
            ],
            "users": [
                {
                    "name": f"{name}-admin",
                    "user": {
                        "client-certificate-data": b64(self.credentials.admin_cert),
                        "client-key-data": b64(self.credentials.admin_key),
                    },
                }
            ],
            "contexts": [{"name": name, "context": {"cluster": name, "user": f"{name}-admin"}}],
            "current-context": name,
        }

    def _write_kubeconfig(self) -> None:
        self.kubeconfig_path.write_text(yaml.safe_dump(self.kubeconfig_dict()))
        self.kubeconfig_path.chmod(0o600)

    def api_client(self) -> Any:
        """Return a sync ``kubernetes.client.ApiClient`` with the admin identity."""
        from kubernetes import client, config

        configuration = client.Configuration()
        config.load_kube_config(
            config_file=str(self.kubeconfig_path), client_configuration=configuration
        )
        return client.ApiClient(configuration)

    async def async_api_client(self) -> Any:
        """Return a ``kubernetes_asyncio.client.ApiClient`` with the admin identity."""
        from kubernetes_asyncio import client, config

        configuration = client.Configuration()
        await config.load_kube_config(
            config_file=str(self.kubeconfig_path), client_configuration=configuration
        )
        return client.ApiClient(configuration)

    def apply_manifest(
        self,
        docs: Mapping[str, Any] | Iterable[Mapping[str, Any]],
        *,
        namespace: str | None = None,
        field_manager: str = FIELD_MANAGER,
    ) -> list[dict[str, Any]]:
        """Server-side apply one object or several; return what the server stored."""
        from kubernetes import dynamic

        documents = [docs] if isinstance(docs, Mapping) else list(docs)
        with self.api_client() as api:
            dyn = dynamic.DynamicClient(api)
            applied = []
            for doc in documents:
                resource = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
                ns = None
                if resource.namespaced:
                    ns = doc.get("metadata", {}).get("namespace") or namespace or "default"
                result = resource.server_side_apply(
                    body=dict(doc), namespace=ns, field_manager=field_manager, force_conflicts=True
                )
                applied.append(result.to_dict())
            return applied

    def install_crds(self, paths: Iterable[Path | str]) -> list[str]:
        """Apply CRD files and wait until every CRD is Established; return their names."""
        from kubernetes import client

        docs: list[dict[str, Any]] = []
        for path in paths:
            docs.extend(
                doc
                for doc in yaml.safe_load_all(Path(path).read_text())
                if doc and doc.get("kind") == "CustomResourceDefinition"
            )
        names = [doc["metadata"]["name"] for doc in docs]
        with self.api_client() as api:
            ext = client.ApiextensionsV1Api(api)
            for doc in docs:
                ext.patch_custom_resource_definition(
                    name=doc["metadata"]["name"],
                    body=doc,
                    field_manager=FIELD_MANAGER,
                    force=True,
                    _content_type="application/apply-patch+yaml",
                )
            deadline = time.monotonic() + CRD_ESTABLISHED_TIMEOUT_S
            pending = set(names)
            while pending and time.monotonic() < deadline:
                for name in sorted(pending):
                    crd = ext.read_custom_resource_definition(name)
                    conditions = crd.status.conditions or [] if crd.status else []
                    if any(c.type == "Established" and c.status == "True" for c in conditions):
                        pending.discard(name)
                if pending:
                    time.sleep(0.1)
            if pending:
                raise ControlPlaneError(f"CRDs not Established in time: {sorted(pending)}")
        return names

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def restart(self, *, graceful: bool = True) -> None:
        """Stop the apiserver and start it again on the same port.

        ``graceful`` stops it with SIGTERM as a rolling upgrade would (it drains open
        watches first, up to STOP_GRACE_S); otherwise it is killed as in a crash, which
        keeps the outage down to the start-up time.
        """
        if graceful:
            self.stop()
        elif self.process is not None:
            self.process.kill()
        self.start()

    def peak_rss_kib(self) -> int | None:
        return self.process.peak_rss_kib() if self.process else None


@dataclass
class ControlPlane:
    """One etcd and any number of apiservers; ``start_cluster`` adds one."""

    workdir: Path
    bin_dir: Path
    etcd: Etcd | None = None
    clusters: dict[str, TestCluster] = field(default_factory=dict)

    @classmethod
    def create(cls, workdir: Path | None = None) -> ControlPlane:
        bin_dir = ensure_binaries()
        root = workdir or Path(tempfile.mkdtemp(prefix="crossfade-testenv-"))
        plane = cls(workdir=root, bin_dir=bin_dir)
        plane.etcd = Etcd(binary=bin_dir / "etcd", workdir=root / "etcd")
        plane.etcd.start()
        return plane

    def start_cluster(self, name: str) -> TestCluster:
        """Start a new apiserver, or start a stopped one again (same port and PKI)."""
        if name in self.clusters:
            existing = self.clusters[name]
            existing.start()
            return existing
        assert self.etcd is not None
        cluster = TestCluster(
            name=name,
            binary=self.bin_dir / "kube-apiserver",
            etcd=self.etcd,
            workdir=self.workdir / name,
        )
        self.clusters[name] = cluster
        cluster.start()
        return cluster

    def stop_cluster(self, name: str) -> None:
        """Stop one apiserver; ``start_cluster(name)`` brings it back on the same port."""
        self.clusters[name].stop()

    def processes(self) -> list[ManagedProcess]:
        procs = [c.process for c in self.clusters.values() if c.process]
        if self.etcd and self.etcd.process:
            procs.append(self.etcd.process)
        return procs

    def stop(self, *, keep_logs_in: Path | None = None) -> None:
        for cluster in self.clusters.values():
            cluster.stop()
        if self.etcd is not None:
            self.etcd.stop()
        if keep_logs_in is not None:
            keep_logs_in.mkdir(parents=True, exist_ok=True)
            for log in self.workdir.rglob("*.log"):
                target = keep_logs_in / str(log.relative_to(self.workdir)).replace("/", "_")
                shutil.copy(log, target)
        shutil.rmtree(self.workdir, ignore_errors=True)
