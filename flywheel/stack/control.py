"""Bring the local stack up and down, and report on it: the logic behind `make up/down/status`."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psutil

from flywheel.config import FlywheelConfig
from flywheel.stack import supervisor as sv
from flywheel.stack.base import Service, StackError, port_free, services


def _select(cfg: FlywheelConfig, only: list[str] | None) -> list[Service]:
    every = services(cfg)
    if not only:
        return [s for s in every if not s.on_demand]
    names = {s.name for s in every}
    unknown = set(only) - names
    if unknown:
        raise StackError(f"unknown service(s) {sorted(unknown)}; choose from {sorted(names)}")
    wanted, grew = set(only), True
    while grew:  # pull in what a chosen service needs, and what that needs
        before = len(wanted)
        for svc in every:
            if svc.name in wanted:
                wanted.update(svc.requires)
        grew = len(wanted) > before
    return [s for s in every if s.name in wanted]


def _who_listens(port: int) -> str:
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                proc = psutil.Process(conn.pid)
                return f"pid {conn.pid} ({' '.join(proc.cmdline()[:3])[:80]})"
    except (psutil.Error, OSError):
        pass
    return "another process"


def _check_ports(cfg: FlywheelConfig, chosen: list[Service], sup: sv.Supervisor) -> None:
    running = {n for n, p in sup.info().items() if p["statename"] in ("RUNNING", "STARTING")}
    names = {p: k for k, p in cfg.all_ports().items()}
    for svc in chosen:
        if all(prog.name in running for prog in svc.programs):
            continue
        for port in svc.ports:
            if not port_free(cfg.stack.bind, port):
                key = names.get(port, svc.name)
                env = "FLYWHEEL__" + key.replace(".", "__").upper()
                raise StackError(
                    f"port {cfg.stack.bind}:{port} ({key}) is already in use by {_who_listens(port)}. "
                    f"Stop that process, or give {svc.name} another port: {env}=<port> or edit config/flywheel.yaml."
                )


def _log_tail(cfg: FlywheelConfig, svc: Service, lines: int = 12) -> str:
    out = []
    for prog in svc.programs:
        path = cfg.stack.logs / f"{prog.name}.log"
        if path.exists():
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path} (last {len(tail)} lines)\n" + "\n".join(tail))
    return "\n".join(out)


def up(cfg: FlywheelConfig, only: list[str] | None = None, echo=print) -> None:
    """Prepare, start and health-check the chosen services (default: all); idempotent."""
    chosen = _select(cfg, only)
    cfg.stack.root.mkdir(parents=True, exist_ok=True)
    sup = sv.Supervisor(cfg)
    _check_ports(cfg, chosen, sup)
    echo(f"preparing {', '.join(s.name for s in chosen)} (state in {cfg.stack.root})")
    with ThreadPoolExecutor(max_workers=len(chosen)) as pool:
        for svc, fut in [(s, pool.submit(s.prepare)) for s in chosen]:
            try:
                fut.result()
            except StackError as exc:
                raise StackError(f"{svc.name}: {exc}") from None
    sv.render(cfg, services(cfg))
    sup.start_daemon()
    started = time.monotonic()
    pending = {s.name: s for s in chosen}
    waiting = dict(pending)  # not started yet
    probe_errors: dict[str, str] = {}
    while pending:
        for name, svc in list(waiting.items()):
            if not any(dep in pending for dep in svc.start_after):
                for prog in svc.programs:
                    sup.start(prog.name)
                del waiting[name]
        for name, svc in list(pending.items()):
            if name in waiting:
                continue
            try:
                ok = svc.healthy()
            except Exception as exc:  # noqa: BLE001 - not answering yet; said if it never does
                ok, probe_errors[name] = False, f"{type(exc).__name__}: {str(exc)[:300]}"
            if ok:
                svc.post_start()
                echo(f"  {name:<11} healthy after {time.monotonic() - started:5.1f}s  {svc.url}")
                del pending[name]
                continue
            info = sup.info()
            dead = [p.name for p in svc.programs if info.get(p.name, {}).get("statename") in ("FATAL", "EXITED", "BACKOFF")]
            if dead and time.monotonic() - started > 5:
                raise StackError(f"{name}: {', '.join(dead)} exited while starting.\n{_log_tail(cfg, svc)}")
        if pending and time.monotonic() - started > cfg.stack.startup_timeout_s:
            names = ", ".join(pending)
            probes = "".join(f"\n{n}'s health probe last failed with {probe_errors[n]}" for n in pending
                             if n in probe_errors)
            tails = "\n".join(_log_tail(cfg, s) for s in pending.values())
            raise StackError(f"not healthy after {cfg.stack.startup_timeout_s:.0f}s: {names}.{probes}\n{tails}")
        time.sleep(1)


def stop(cfg: FlywheelConfig, only: list[str]) -> None:
    """Stop the programs of the named services (others keep running)."""
    sup = sv.Supervisor(cfg)
    if not sup.running():
        return
    for svc in services(cfg):
        if svc.name in only:
            for prog in svc.programs:
                sup.stop(prog.name)


def down(cfg: FlywheelConfig) -> bool:
    """Stop every program and supervisord; True if anything was running."""
    sup = sv.Supervisor(cfg)
    if not sup.running():
        return False
    sup.shutdown()
    return True


@dataclass
class ServiceStatus:
    name: str
    healthy: bool
    url: str
    programs: dict[str, str]
    rss_mib: float
    on_demand: bool = False  # started by `flywheel demo` / `up --only`, not by a bare `up`

    @property
    def off(self) -> bool:
        """An on-demand service nobody started: not a failure."""
        return self.on_demand and all(s in ("STOPPED", "EXITED") for s in self.programs.values())


def _rss_mib(pid: int) -> float:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def status(cfg: FlywheelConfig) -> list[ServiceStatus]:
    info = sv.Supervisor(cfg).info()
    out = []
    for svc in services(cfg):
        progs = {p.name: info.get(p.name, {}).get("statename", "STOPPED") for p in svc.programs}
        rss = sum(_rss_mib(info[p.name]["pid"]) for p in svc.programs if info.get(p.name, {}).get("pid"))
        try:
            ok = svc.healthy() if any(s == "RUNNING" for s in progs.values()) else False
        except Exception:  # noqa: BLE001
            ok = False
        out.append(ServiceStatus(svc.name, ok, svc.url, progs, rss, svc.on_demand))
    return out


def log_files(cfg: FlywheelConfig) -> list[Path]:
    logs = cfg.stack.logs
    return sorted(p for p in logs.glob("**/*") if p.is_file() and p.suffix in (".log", ".out")) if logs.exists() else []
