#!/usr/bin/env python3
"""Write BENCHMARKS.md and its SVG charts from the JSON results of bench/run.sh.

    bench/report.py RESULTS_DIR OUT_DIR [--check]

RESULTS_DIR holds machine.json, fakehost.json and, from a full run, isolation.json,
hugepages-host.json, hugepages-guest.json, libvirt.json (a missing one leaves its section saying
so). OUT_DIR gets BENCHMARKS.md and bench/*.svg. --check (the CI's quick run): fail unless the
fake-root numbers are there, and loosely within their targets (the CI machine is shared).
"""

import json
import math
import os
import statistics
import sys

TARGET_NOOP_MS = 2.0
TARGET_RATIO = 20.0
TARGET_SCALE_MS = 50.0
# prepare + release of a `kvmtune run` VM isolated by an isolated cpuset partition (issue 17).
TARGET_PARTITION_MS = 10.0
TARGET_SHARE = 0.99
TARGET_INVOL = 1.0


def load(results, name):
    path = os.path.join(results, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def ms(x, digits=1):
    if x is None:
        return "–"
    if x >= 100:
        return f"{x:.0f}"
    return f"{x:.{digits}f}"


def met(ok):
    return "**met**" if ok else "**missed**"


# ---------------------------------------------------------------------------------------------
# SVG: small, dependency-free charts.

PALETTE = ["#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b83280", "#718096"]
FONT = "font-family='sans-serif'"


def font(size=12):
    return f"{FONT} font-size='{size}'"


def esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def nice_max(v):
    if v <= 0:
        return 1
    e = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if m * e >= v:
            return m * e
    return 10 * e


def svg_doc(w, h, body, title):
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' viewBox='0 0 {w} {h}'>\n"
        f"<title>{esc(title)}</title>\n<rect width='{w}' height='{h}' fill='white'/>\n"
        f"<text x='{w / 2}' y='20' text-anchor='middle' {font(14)} font-weight='bold'>{esc(title)}</text>\n"
        + body
        + "</svg>\n"
    )


def bars(title, groups, series, values, unit, log=False, w=760, h=340, failed=None):
    """Grouped bar chart: values[s][g]; failed[s][g] True draws that bar pale, marked ✗."""
    left, right, top, bottom = 70, 20, 50, 80
    pw, ph = w - left - right, h - top - bottom
    vmax = max((v for row in values for v in row if v is not None), default=1)
    out = []
    if log:
        vmin = min((v for row in values for v in row if v), default=0.1)
        lo = 10 ** math.floor(math.log10(vmin))
        hi = 10 ** math.ceil(math.log10(vmax))

        def y(v):
            return top + ph - (math.log10(max(v, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * ph

        ticks = []
        t = lo
        while t <= hi * 1.0001:
            ticks.append(t)
            t *= 10
    else:
        hi = nice_max(vmax)

        def y(v):
            return top + ph - v / hi * ph

        ticks = [hi * i / 5 for i in range(6)]
    for t in ticks:
        out.append(f"<line x1='{left}' x2='{left + pw}' y1='{y(t):.1f}' y2='{y(t):.1f}' stroke='#e2e8f0'/>")
        label = f"{t:g}"
        out.append(f"<text x='{left - 6}' y='{y(t) + 4:.1f}' text-anchor='end' {font()}>{label}</text>")
    out.append(
        f"<text x='16' y='{top + ph / 2}' transform='rotate(-90 16 {top + ph / 2})' text-anchor='middle' {font()}>{esc(unit)}</text>"
    )
    gw = pw / len(groups)
    bw = gw * 0.8 / len(series)
    for gi, g in enumerate(groups):
        for si, _ in enumerate(series):
            v = values[si][gi]
            if v is None:
                continue
            x = left + gi * gw + gw * 0.1 + si * bw
            y0 = y(v)
            bad = bool(failed and failed[si][gi])
            opacity = " fill-opacity='0.3'" if bad else ""
            out.append(
                f"<rect x='{x:.1f}' y='{y0:.1f}' width='{bw - 1:.1f}' height='{top + ph - y0:.1f}' fill='{PALETTE[si % len(PALETTE)]}'{opacity}><title>{esc(series[si])} {esc(g)}: {v:.3g} {esc(unit)}</title></rect>"
            )
            label = f"{v:.3g}" if v < 1000 else f"{v / 1000:.3g}k"
            out.append(
                f"<text x='{x + bw / 2:.1f}' y='{y0 - 3:.1f}' text-anchor='middle' {font(9)}>{'✗ ' if bad else ''}{label}</text>"
            )
        cx = left + gi * gw + gw / 2
        for li, line in enumerate(str(g).split(": ")):
            out.append(
                f"<text x='{cx:.1f}' y='{top + ph + 16 + 14 * li}' text-anchor='middle' {font()}>{esc(line)}</text>"
            )
    out.append(f"<line x1='{left}' x2='{left + pw}' y1='{top + ph}' y2='{top + ph}' stroke='black'/>")
    out.append(legend(series, left, h - 22))
    return svg_doc(w, h, "\n".join(out) + "\n", title)


def legend(series, x, y):
    parts = []
    for i, s in enumerate(series):
        parts.append(f"<rect x='{x}' y='{y - 10}' width='12' height='12' fill='{PALETTE[i % len(PALETTE)]}'/>")
        parts.append(f"<text x='{x + 16}' y='{y}' {font()}>{esc(s)}</text>")
        x += 24 + 7 * len(s)
    return "\n".join(parts)


def lines_panel(px, py, pw, ph, title, xs, series, xlabel, ylabel, hline=None):
    """One line-chart panel at (px, py); series: [(name, [y...])]."""
    out = [f"<text x='{px + pw / 2}' y='{py - 8}' text-anchor='middle' {font()} font-weight='bold'>{esc(title)}</text>"]
    ymax = max([v for _, ys in series for v in ys if v is not None] + ([hline] if hline else []))
    hi = nice_max(ymax * 1.05)
    xlo, xhi = min(xs), max(xs)

    def X(v):
        return px + (v - xlo) / ((xhi - xlo) or 1) * pw

    def Y(v):
        return py + ph - v / hi * ph

    for i in range(6):
        t = hi * i / 5
        out.append(f"<line x1='{px}' x2='{px + pw}' y1='{Y(t):.1f}' y2='{Y(t):.1f}' stroke='#e2e8f0'/>")
        out.append(f"<text x='{px - 5}' y='{Y(t) + 4:.1f}' text-anchor='end' {font(10)}>{t:g}</text>")
    for v in xs:
        out.append(f"<text x='{X(v):.1f}' y='{py + ph + 14}' text-anchor='middle' {font(10)}>{v:g}</text>")
    out.append(f"<text x='{px + pw / 2}' y='{py + ph + 30}' text-anchor='middle' {font(11)}>{esc(xlabel)}</text>")
    out.append(
        f"<text x='{px - 40}' y='{py + ph / 2}' transform='rotate(-90 {px - 40} {py + ph / 2})' text-anchor='middle' {font(11)}>{esc(ylabel)}</text>"
    )
    out.append(f"<rect x='{px}' y='{py}' width='{pw}' height='{ph}' fill='none' stroke='black'/>")
    if hline:
        out.append(
            f"<line x1='{px}' x2='{px + pw}' y1='{Y(hline):.1f}' y2='{Y(hline):.1f}' stroke='#e53e3e' stroke-dasharray='5,4'/>"
        )
        out.append(f"<text x='{px + pw - 4}' y='{Y(hline) - 4:.1f}' text-anchor='end' {font(10)} fill='#e53e3e'>target {hline:g}</text>")
    for si, (name, ys) in enumerate(series):
        pts = [(X(x), Y(v)) for x, v in zip(xs, ys) if v is not None]
        color = PALETTE[si % len(PALETTE)]
        out.append(
            "<polyline fill='none' stroke='{}' stroke-width='2' points='{}'/>".format(
                color, " ".join(f"{a:.1f},{b:.1f}" for a, b in pts)
            )
        )
        for a, b in pts:
            out.append(f"<circle cx='{a:.1f}' cy='{b:.1f}' r='3' fill='{color}'/>")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Sections.


def section_machine(m):
    lines = [
        "| | |",
        "| --- | --- |",
        f"| CPUs (`nproc`) | {m.get('nproc')} |",
        f"| CPU model | {m.get('cpu_model')} |",
        f"| memory | {m.get('mem_gib')} GiB; NUMA nodes online: {m.get('nodes')} |",
        f"| kernel | {m.get('kernel')} |",
        f"| cgroups | {m.get('cgroups')} |",
        f"| load average at start / end | {m.get('load_start')} / {m.get('load_end', '–')} |",
        f"| kvmtune | {m.get('commit')} ({m.get('rustc')}, release profile: LTO) |",
        f"| date | {m.get('date')} |",
    ]
    return "\n".join(lines)


def hook_section(h, out_dir, svgs):
    s = h["stats"]
    events = ["prepare", "start", "started", "stopped", "release"]
    rows = ["| call | kvmtune median | p99 | CPU | shell median | p99 | CPU |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for e in events:
        k, sh = s[f"kvmtune {e}"], s[f"shell {e}"]
        rows.append(
            f"| `{e}` | {ms(k['wall']['median'], 2)} | {ms(k['wall']['p99'], 2)} | {ms(k['cpu']['median'], 2)} | {ms(sh['wall']['median'], 2)} | {ms(sh['wall']['p99'], 2)} | {ms(sh['cpu']['median'], 2)} |"
        )
    k, sh = s["kvmtune cycle"], s["shell cycle"]
    rows.append(
        f"| **full cycle** | **{ms(k['wall']['median'], 2)}** | {ms(k['wall']['p99'], 2)} | {ms(k['cpu']['median'], 2)} | **{ms(sh['wall']['median'], 2)}** | {ms(sh['wall']['p99'], 2)} | {ms(sh['cpu']['median'], 2)} |"
    )
    noop = [
        "| call with nothing to do | median | p99 | CPU median |",
        "| --- | ---: | ---: | ---: |",
    ]
    for key, label in [
        ("noop kvmtune start", "`kvmtune` hook, `start begin` (an event it ignores)"),
        ("noop kvmtune prepare plain VM", "`kvmtune` hook, `prepare` of a VM that asks for nothing"),
        ("noop fakehost start", "the benchmark's hook executable, `start begin`"),
        ("floor static exec", "floor: `exec` of a static C program that does nothing"),
    ]:
        v = s[key]
        noop.append(f"| {label} | {ms(v['wall']['median'], 2)} | {ms(v['wall']['p99'], 2)} | {ms(v['cpu']['median'], 2)} |")
    svgs["hook.svg"] = bars(
        "Hook calls of one VM start and stop (median wall ms, fake root)",
        events + ["full cycle"],
        ["kvmtune", "bash scripts"],
        [
            [s[f"kvmtune {e}"]["wall"]["median"] for e in events] + [s["kvmtune cycle"]["wall"]["median"]],
            [s[f"shell {e}"]["wall"]["median"] for e in events] + [s["shell cycle"]["wall"]["median"]],
        ],
        "ms",
        log=True,
    )
    shape = h["shape"]
    vm = h["vm"]
    return f"""Every call is a fresh process, as libvirt runs it, fed the domain XML on stdin; {h['reps']}
rounds, the variants interleaved in one loop. The host is a fake root ({shape['nodes']} nodes,
{shape['cpus']} CPUs, {shape['irqs']} IRQs, {shape['tasks']} processes, cgroup v1 like this machine); the VM has
{vm['memory_mib']} MiB on 2 MiB pages on node 0 ({vm['pages_2m']} pages), 8 vCPUs pinned to CPUs {vm['cpus']} and
isolated, and the passthrough device {vm['device']} whose IRQs go to its vCPUs. *Wall* is spawn to
exit; *CPU* is user + system time of the process and its children (this machine is shared:
wall time includes waiting for a CPU, CPU time does not).

{chr(10).join(noop)}

{chr(10).join(rows)}

![hook calls](bench/hook.svg)

The shell way (bench/shell/) is a dispatcher in `/etc/libvirt/hooks/qemu` running per-VM
scripts as the passthrough guides have users write them: the global hugepage count with
`drop_caches` and `compact_memory` and a retry loop, a `cset shield`-style cgroup v1 shield
(every task of the root cpuset into a `system` cpuset), and IRQ loops. kvmtune does more in the
same calls: a write-ahead journal, reading back what the kernel gave, keeping pinned threads'
masks, confining only host tasks (not libvirt's or the VM's), putting back exactly what it
changed. Ratio, shell over kvmtune, full cycle: **{h['ratio_shell_over_kvmtune']:.1f}x** wall,
**{h['cpu_ratio_shell_over_kvmtune']:.1f}x** CPU.

Why the ratio stays far from 20x: most of both sides' time is the same system calls. The
shell's loops are bash builtins (`echo PID > tasks`, `echo CPUS > smp_affinity_list`): an
open, a write and a close per process and per IRQ, as kvmtune's. What the shell pays on top
is bash and the processes it forks (`find`, `sort`, `cat`, `grep`, `awk`), a few milliseconds
a call; what kvmtune pays on top is reading each value before it writes it (to put it back),
one read of every process's `stat` (to leave kernel threads and the daemons alone) and the
journal. A ratio of 20 would need the shell to fork per process or per IRQ, which the guides'
scripts avoid, or kvmtune to skip the reads that make its restore exact.
"""


def call_rows(b):
    """The table of one scale point: each call's medians and file operations."""
    rows = ["| call | median ms | p99 | CPU ms | file reads | writes | dir lists |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    ops = b.get("ops", {})
    for key, label, opkey in [
        ("prepare_release", "**prepare + release** (no `started`)", None),
        ("prepare", "prepare", "prepare"),
        ("started", "started", "started"),
        ("release", "release (after started)", "release after started"),
        ("cycle", "full cycle", None),
    ]:
        v = b[key]
        o = ops.get(opkey, {}) if opkey else {}
        if key == "prepare_release" and "prepare" in ops and "release after prepare" in ops:
            o = {k: ops["prepare"][k] + ops["release after prepare"][k] for k in ops["prepare"]}
        rows.append(
            f"| {label} | {ms(v['wall']['median'])} | {ms(v['wall']['p99'])} | {ms(v['cpu']['median'])} | {o.get('reads', '–')} | {o.get('writes', '–')} | {o.get('lists', '–')} |"
        )
    return rows


def partition_text(sc):
    """The `partition` point and its tasks sweep, if measured."""
    p = sc.get("partition")
    if not p:
        return ""
    pr = p["prepare_release"]
    wall, cpu = pr["wall"]["median"], pr["cpu"]["median"]
    ops = p.get("ops", {})
    m = p.get("measured", {})
    text = f"""
### Isolated partitions (`kvmtune run`)

The same host with cgroup v2 alone, no systemd, and a kernel that offers isolated cpuset
partitions (the root's `cpuset.cpus.isolated`; the fake root's file layer models their rules,
bench/fakehost/cgroup2.rs). The VM is one `kvmtune run` starts (the same calls: `prepare`, then
`started` once QEMU is up, `release`), so `auto` isolates its 4 CPUs with kvmtune's own
partition `kvmtune.isolated`; the benchmark checks that it reads `isolated`, that the root's
`cpuset.cpus.isolated` lists the VM's CPUs and its effective CPUs do not, and that release
leaves the fake root as it found it. Measured {m.get('date', '?')} at {m.get('commit', '?')}, load
average {m.get('load_start', '?')} at start, {m.get('load_end', '?')} at end; {pr['wall']['n']} rounds.

{chr(10).join(call_rows(p))}

Target: prepare + release under {TARGET_PARTITION_MS:g} ms. Measured: {ms(wall)} ms median wall, {ms(cpu)} ms
CPU: {met(wall < TARGET_PARTITION_MS)}"""
    if "prepare" in ops and "release after prepare" in ops:
        pre, rel = ops["prepare"], ops["release after prepare"]
        text += f""" (by {wall / TARGET_PARTITION_MS:.1f}x). No process is moved: prepare writes {pre['writes']} files
and release {rel['writes']} (the v1 method above writes one `cgroup.procs` per process), and no
process is read either: the partition method looks at the kernel threads alone, kthreadd's
children (`/proc/2/task/2/children`). But it reads each of them ({pre['reads']} files in prepare, one
`/proc/PID/stat` per kernel thread and a few more): 4 per-CPU kernel threads per CPU on this
1024-CPU host, which only their flags tell from the unbound ones it moves off the isolated
CPUs. At {p['read_us']:.1f} µs a read on this machine that look is about {pre['reads'] * p['read_us'] / 1000:.0f} ms. Meeting the target would
need prepare not to look at them: the kernel itself moves the root's unbound kernel threads
off a partition's CPUs when it forms, but gives them every CPU when it goes (within a pin made
with taskset), so a thread the kernel bound to its node's CPUs (kswapd) or to one CPU (a
threaded IRQ handler, irq/9-acpi) would not get them back; kvmtune keeps that exact. Tried and
left out: telling the per-CPU threads by their mask alone (one `sched_getaffinity` each, no
file) and reading only those allowed more than one CPU took prepare + release from 31 to 10
ms of CPU here (`perf stat`, medians of 21), but on Debian 13's 6.12 kernel irq/9-acpi,
bound to CPU 1, came back on every CPU: only a thread's flags in `/proc/PID/stat` tell a
per-CPU thread from one the kernel merely bound.
(The v1 table above comes from the run in the machine table, at another time and load:
compare CPU times and file counts across the two, not wall times.)
""" if wall >= TARGET_PARTITION_MS else ".\n"
    else:
        text += ".\n"
    pts = sc.get("sweeps", {}).get("partition_tasks")
    if pts:
        table = ["| tasks | prepare + release ms | CPU ms | prepare file reads | full cycle ms | CPU ms |", "| ---: | ---: | ---: | ---: | ---: | ---: |"]
        for q in pts:
            reads = q.get("ops", {}).get("prepare", {}).get("reads", "–")
            table.append(
                f"| {q['shape']['tasks']} | {ms(q['prepare_release']['wall']['median'])} | {ms(q['prepare_release']['cpu']['median'])} | {reads} | {ms(q['cycle']['wall']['median'])} | {ms(q['cycle']['cpu']['median'])} |"
            )
        text += f"""
How it grows with processes (medians of {pts[0]['prepare_release']['wall']['n']} rounds per point; the purple line in the
processes panel of the chart above):

{chr(10).join(table)}
"""
        if len(pts) > 1:
            lo, hi = pts[-2], pts[-1]
            text += f"""
From {lo['shape']['tasks']} to {hi['shape']['tasks']} tasks the host has the same kernel threads (the per-CPU ones are capped at
4 per CPU) and twice the processes: prepare + release goes from {ms(lo['prepare_release']['cpu']['median'])} to {ms(hi['prepare_release']['cpu']['median'])} ms CPU.
Below, the layout gives kernel threads 4 in 5 of the tasks, and the cost follows them.
"""
    return text


def scale_section(sc, svgs):
    b = sc["base"]
    shape = b["shape"]
    ops = b.get("ops", {})
    rows = call_rows(b)
    text = f"""The fake root of a large host: {shape['nodes']} nodes, {shape['cpus']} CPUs, {shape['irqs']} IRQs (one in
eight managed, refusing moves as the kernel does), {shape['tasks']} processes (4 per-CPU kernel threads per
CPU, the rest services with 1 to 4 threads; one in 50 has a pinned thread), /proc/interrupts at
the kernel's width ({shape['cpus']} columns). The VM: 16 GiB on node 1, 4 vCPUs isolated, the
passthrough device. Each round times prepare → release (a start that stops before QEMU runs)
and prepare → started → release; the file operations are kvmtune's own, counted by the fake
root's file layer (they do not depend on the load).

{chr(10).join(rows)}
"""
    if "read_us" in b and "prepare" in ops and "release after prepare" in ops:
        n = sum(ops["prepare"].values()) + sum(ops["release after prepare"].values())
        text += f"""
A read of a small file costs {b['read_us']:.1f} µs on this machine (the fake root's /proc/PID/stat,
read as kvmtune reads); prepare + release make {n} file operations, about {n * b['read_us'] / 1000:.0f} ms of
the time above. Most of them are one read of every process's `stat` in prepare (which processes
are kernel threads, which of those may move, which are the daemons to leave alone): the cost
grows with the number of processes, as the sweep below shows, and with the cost of a system call.
That one look is the floor of this design; a real /proc answers such a read no faster than the
fake root's files do.
"""
    old_k = sc.get("old_kernel")
    if old_k:
        ok = old_k.get("ops", {})
        reads = sum(ok.get(k, {}).get("reads", 0) for k in ("prepare", "release after prepare"))
        text += f"""
The fake host says it runs Linux {shape.get('kernel', '6.18')}. From 6.2 the kernel keeps a thread's own CPU mask
(`taskset`, a pinned service thread) when its cpuset changes, and kvmtune does not look at
threads. On an older kernel ({old_k['shape'].get('kernel')}) it notes every pinned thread of the processes it moves and
puts them back: prepare + release then take {ms(old_k['prepare_release']['wall']['median'])} ms (CPU {ms(old_k['prepare_release']['cpu']['median'])}) and {reads} reads,
the full cycle {ms(old_k['cycle']['wall']['median'])} ms.
"""
    sw = sc.get("sweeps")
    if sw:
        w, h = 900, 640
        pw, ph = 330, 200
        panels = []
        spec = [
            ("cpus", "cpus", "CPUs (16 nodes, 8192 IRQs, 5000 tasks)"),
            ("irqs", "irqs", "IRQs (1024 CPUs, 5000 tasks)"),
            ("tasks", "tasks", "processes (1024 CPUs, 8192 IRQs)"),
            ("running_vms", None, "VMs already running (base host)"),
        ]
        pos = [(90, 70), (540, 70), (90, 380), (540, 380)]
        table = ["| sweep | value | prepare + release ms | CPU ms | full cycle ms | CPU ms |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for (key, field, label), (px, py) in zip(spec, pos):
            pts = sw[key]
            xs = [p["running_vms"] if field is None else p["shape"][field] for p in pts]
            pr = [p["prepare_release"]["wall"]["median"] for p in pts]
            prc = [p["prepare_release"]["cpu"]["median"] for p in pts]
            cy = [p["cycle"]["wall"]["median"] for p in pts]
            cyc = [p["cycle"]["cpu"]["median"] for p in pts]
            series = [("prepare+release wall", pr), ("prepare+release CPU", prc), ("full cycle CPU", cyc)]
            if key == "tasks" and "partition_tasks" in sw:
                # The partition host's prepare + release, at the same process counts.
                by_tasks = {p["shape"]["tasks"]: p["prepare_release"]["wall"]["median"] for p in sw["partition_tasks"]}
                series.append(("partition prepare+release wall", [by_tasks.get(x) for x in xs]))
            panels.append(
                lines_panel(
                    px, py, pw, ph, label, xs,
                    series,
                    label.split(" (")[0], "ms", hline=TARGET_SCALE_MS,
                )
            )
            for x, a, ac, c, cc in zip(xs, pr, prc, cy, cyc):
                table.append(f"| {key} | {x} | {ms(a)} | {ms(ac)} | {ms(c)} | {ms(cc)} |")
        names = ["prepare+release wall", "prepare+release CPU", "full cycle CPU"]
        if "partition_tasks" in sw:
            names.append("partition prepare+release wall")
        body = "\n".join(panels) + "\n" + legend(names, 90, h - 12) + "\n"
        svgs["scale.svg"] = svg_doc(w, h, body, "Cost of a VM's hook calls as the host grows (median ms)")
        text += f"""
How it grows (medians of {pts[0]['prepare_release']['wall']['n']} rounds per point, a fresh host per point):

![scale](bench/scale.svg)

{chr(10).join(table)}

Reading the sweeps: prepare + release grows with the number of processes, linearly (one read of
each process's `stat`), and little with CPUs or IRQs (the CPU sweep holds the process count at
5000; more CPUs means more per-CPU kernel threads among them, and a wider /proc/interrupts).
The full cycle grows with IRQs, linearly: every IRQ not managed is moved off the isolated CPUs
at `started` and back at release, a read and a write each, and /proc/interrupts (a count per CPU
per IRQ: 92 MB at 1024 CPUs and 8192 IRQs) is read to find the VFIO vectors of the passthrough
device. With another VM running that has a device and isolated CPUs, a release of this VM also
works out where every IRQ should be for the VM that stays: /proc/interrupts and every IRQ's
affinity are read again, hence the step from 0 to 1 running VM; more VMs add little.
"""
    text += partition_text(sc)
    return text


def isolation_section(iso, svgs):
    rows = [
        "| round | CPU 1 share of the busy thread (stat) | (schedstat) | involuntary switches/s | interrupts on CPU 1 /s | block-I/O softirqs on CPU 1 /s | stress-ng workers on |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    by = {"baseline": [], "isolated": []}
    for r in iso["rounds"]:
        by[r["arm"]].append(r)
        rows.append(
            f"| {r['arm']} | {r['share_stat'] * 100:.2f} % | {r['share_schedstat'] * 100:.2f} % | {r['involuntary_per_s']:.2f} | {r.get('cpu1_irqs_per_s', '–')} | {r.get('cpu1_block_softirqs_per_s', '–')} | CPUs {r['stress_workers_cpus']} |"
        )
    mean = lambda arm, k: statistics.mean(x[k] for x in by[arm])  # noqa: E731
    svgs["isolation.svg"] = bars(
        "A busy thread pinned to CPU 1 while stress-ng loads every CPU",
        ["share of CPU 1 (%)", "involuntary switches / s"],
        ["without kvmtune", "CPU 1 isolated by kvmtune"],
        [
            [mean("baseline", "share_stat") * 100, mean("baseline", "involuntary_per_s")],
            [mean("isolated", "share_stat") * 100, mean("isolated", "involuntary_per_s")],
        ],
        "% / per second",
        w=560,
    )
    share, invol = mean("isolated", "share_stat"), mean("isolated", "involuntary_per_s")
    iso_rounds = [r for r in by["isolated"] if "cpu1_irqs_per_s" in r]
    device_note = ""
    if iso_rounds:
        irqs = statistics.mean(r["cpu1_irqs_per_s"] for r in iso_rounds)
        blk = statistics.mean(r["cpu1_block_softirqs_per_s"] for r in iso_rounds)
        device_note = (
            f" In this run's isolated rounds CPU 1 took {irqs:.1f} device interrupts/s and {blk:.1f}"
            " block softirqs/s (the columns above): the other jobs' disk traffic decides how many."
        )
    return (
        f"""`{iso['stress']}` loads every CPU; a busy thread (bench/spin.c) pinned to CPU 1 sits in its own
cpuset, as libvirt places a vCPU. Measured over {iso['rounds'][0]['seconds']:.0f} s per round, rounds alternating: without
isolation, and with kvmtune's hook (prepare + started, on the real root) isolating CPU 1.

{chr(10).join(rows)}

![isolation](bench/isolation.svg)

Isolated: {share * 100:.2f} % of CPU 1 (target ≥ 99 %: {met(share >= TARGET_SHARE)}), {invol:.2f} involuntary
switches/s (target < 1: {met(invol < TARGET_INVOL)}); without: {mean('baseline', 'share_stat') * 100:.1f} % and
{mean('baseline', 'involuntary_per_s'):.0f}/s. What still reaches the isolated CPU: the local timer and per-CPU
kernel threads (kworkers), which no one can move, and the IRQs the kernel will not move. This
machine's virtio disk has one request queue, a *managed* IRQ on CPU 1 that refuses to move
(EPERM; kvmtune says so and leaves it), so the block I/O of any job on the machine completes
there.{device_note} A host would keep managed IRQs off isolated CPUs with the
`isolcpus=managed_irq,CPUS` boot parameter, or isolate CPUs its devices' queues do not use.
""",
        share,
        invol,
    )


HV_MODES = [
    ("none", "no isolation"),
    ("confinement", "confinement (isolation = \"systemd\")"),
    ("partition", "isolated partition"),
]


def reading(mean):
    """What section 3b's numbers say, from the means of each method."""
    w = {m: mean(m, "waited_ms_per_s") for m, _ in HV_MODES}
    sh = {m: mean(m, "share") * 100 for m, _ in HV_MODES}
    so = {m: mean(m, "softirq_per_s") for m, _ in HV_MODES}
    inv = {m: mean(m, "invol_per_s") for m, _ in HV_MODES}
    loc = {m: mean(m, "loc_per_s") for m, _ in HV_MODES}
    if any(v is None for v in list(w.values()) + list(so.values())):
        return "not every method ran."
    return f"""systemd gives machine.slice the same CPU weight as system.slice,
so even without isolation the scheduler keeps most of the load off the vCPU's CPU: its share is
{sh['none']:.1f} % without isolation, {sh['confinement']:.1f} % with confinement and {sh['partition']:.1f} % with a partition.
What isolation takes away is the waiting and the kernel's work there. The vCPU waited
{w['none']:.1f} ms per second for its CPU without isolation, {w['confinement']:.1f} with confinement (every unit's
AllowedCPUs narrowed, the busy loops moved) and {w['partition']:.1f} with a partition (no process moved: the
kernel takes CPU 3 from every other cgroup and from load balancing). CPU 3 ran {so['none']:.0f} softirqs
per second without isolation, {so['confinement']:.0f} with confinement and {so['partition']:.0f} with a partition. Neither
method stops the local timer ({loc['none']:.0f}, {loc['confinement']:.0f} and {loc['partition']:.0f} per second: that takes `nohz_full` at
boot) nor the per-CPU kernel threads (kworkers, ksoftirqd), which may still preempt the vCPU:
{inv['none']:.1f}, {inv['confinement']:.1f} and {inv['partition']:.1f} involuntary switches per second. Under TCG the guest's CPUs are threads of a 2-CPU host:
absolute rates are the guest's view, not a server's; the comparison between methods is the
point."""


def hv_isolation_section(hv, svgs):
    """Section 3b: the Debian 13 guest, no isolation / confinement / partition side by side."""
    by = {m: [r for r in hv["rounds"] if r["mode"] == m] for m, _ in HV_MODES}
    mean = lambda m, k: statistics.mean(r[k] for r in by[m]) if by[m] else None  # noqa: E731
    rows = [
        "| method | rounds | share of CPU 3 | waited for it (ms/s) | involuntary switches/s | interrupts/s on CPU 3 | of which local timer | device | IPIs and other | softirqs/s on CPU 3 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for m, label in HV_MODES:
        if not by[m]:
            continue
        rows.append(
            f"| {label} | {len(by[m])} | {mean(m, 'share') * 100:.1f} % | {mean(m, 'waited_ms_per_s'):.1f} | {mean(m, 'invol_per_s'):.1f} | {mean(m, 'irq_per_s'):.1f} | {mean(m, 'loc_per_s'):.1f} | {mean(m, 'device_irq_per_s'):.1f} | {mean(m, 'other_irq_per_s'):.1f} | {mean(m, 'softirq_per_s'):.1f} |"
        )
    present = [(m, label) for m, label in HV_MODES if by[m]]
    svgs["isolation-hypervisor.svg"] = bars(
        "A vCPU pinned to CPU 3 under host load (Debian 13, kernel " + hv.get("kernel", "?") + ")",
        ["share of CPU 3 (%)", "waited for CPU 3 (ms/s)", "involuntary switches / s", "softirqs on CPU 3 / s"],
        [label for _, label in present],
        [
            [mean(m, "share") * 100, mean(m, "waited_ms_per_s"), mean(m, "invol_per_s"), mean(m, "softirq_per_s")]
            for m, _ in present
        ],
        "% / per second / ms per second",
        w=820,
    )
    secs = hv["rounds"][0]["seconds"]
    return f"""In the Debian 13 hypervisor guest of the test tiers (under QEMU/TCG; 4 CPUs in 2 nodes, systemd
257 on cgroup v2, libvirt 11.3, kernel {hv.get('kernel', '?')}), `bench/hypervisor.sh` boots once and
runs `bench/hypervisor/50-isolation.sh`. The vCPU is a real one: a libvirt VM pinned to CPU 3
whose firmware boots a disk whose boot sector only jumps to itself, so QEMU's `CPU 0/TCG` thread is
always busy. Eight busy shell loops (two per CPU) in one system.slice service load every CPU,
started before the VM. Each method runs {len(by['none'])} rounds of {secs:.0f} s, alternating, all from the guest
kernel's own accounting: the vCPU thread's time on CPU and time runnable but waiting
(/proc/PID/task/TID/schedstat) over wall time, its involuntary switches, and CPU 3's columns of
/proc/interrupts and /proc/softirqs.

{chr(10).join(rows)}

![isolation in the hypervisor guest](bench/isolation-hypervisor.svg)

Reading it: {reading(mean)}
"""


def hugepages_rows(trials, topo=None):
    """(where, case, method, trial); case: page size, target and, in the guest, how much of the
    node's free memory was touched."""
    rows = []
    for t in trials:
        tr = t.get("trial", t)
        size = "2 MiB" if tr["size_kb"] == 2048 else "1 GiB"
        case = f"{tr['target']} x {size}"
        if "frag_pct" in t:
            case += f", {t['frag_pct']} %"
        rows.append((topo or t.get("topo", "host"), case, tr["method"], tr))
    return rows


def hugepages_table(rows):
    out = [
        "| where | pages (memory touched) | method | VM's node got | other nodes got | VM served | time ms | free 2 MiB blocks before | page cache MiB before → after |",
        "| --- | --- | --- | ---: | ---: | --- | ---: | ---: | --- |",
    ]
    for where, size, method, tr in rows:
        ok = "yes" if tr["ok"] else ("no (the global count was reached)" if tr["global_reached"] else "no")
        out.append(
            f"| {where} | {size} | {method} | {tr['node_pages']} / {tr['target']} | {tr['other_nodes_pages']} | {ok} | {ms(tr['ms'])} | {tr['free_2m_blocks_before']} | {tr['cached_mib_before']} → {tr['cached_mib_after']} |"
        )
    return "\n".join(out)


def hugepages_section(host, guest, svgs):
    parts = []
    verdicts = []
    if host:
        rows = hugepages_rows(host["trials"], "this host")
        parts.append(
            f"""**This machine** ({host['mem_total_mib'] // 1024} GiB, one node): each trial touches {host['frag_mib']} MiB with
bench/fragment.c and keeps half, every other page (anonymous memory interleaved with page cache
and tmpfs inodes), then reserves 2 GiB of 2 MiB pages or 2 x 1 GiB pages.

{hugepages_table(rows)}
"""
        )
        verdicts += rows
    if guest:
        rows = hugepages_rows(guest["trials"])
        parts.append(
            f"""**The test guest** (Debian's {guest.get('kernel', '6.1')} kernel under QEMU/TCG; `2node`: two nodes of 3 GiB,
`3node`: 2, 3 and 1 GiB): node 1 fragmented the same way (80 % of its free memory touched,
or 40 %; page cache from a RAM disk), then 512 MiB and 1 GiB of 2 MiB pages, or one 1 GiB
page, for a VM bound to node 1. "VM served": all its pages on its node (pages on another node
are remote memory for the VM, and the global count the script waits for is reached without
them). No method got a 1 GiB page on a node this fragmented; where kvmtune could not, it
refused in one line and left the pools as they were.

{hugepages_table(rows)}
"""
        )
        verdicts += rows
    if not parts:
        return "Not run (bench/run.sh --quick runs only the fake-root sections).\n", None
    # Per (where, page size), over rounds: kvmtune succeeds whenever any method does, in less
    # time, never touching another node.
    groups = {}
    for where, size, method, tr in verdicts:
        groups.setdefault((where, size), {}).setdefault(method, []).append(tr)
    never_other = all(tr["other_nodes_pages"] == 0 for _, _, m, tr in verdicts if m == "kvmtune")
    succ = True
    faster = {"script": True, "plain": True}
    for (where, size), by in groups.items():
        k = by.get("kvmtune", [])
        others = [t for m, ts in by.items() if m != "kvmtune" for t in ts]
        if any(t["ok"] for t in others) and not all(t["ok"] for t in k):
            succ = False
        for m in faster:
            ok_m = [t["ms"] for t in by.get(m, []) if t["ok"]]
            if k and ok_m and statistics.median(t["ms"] for t in k) > statistics.median(ok_m):
                faster[m] = False
    parts.append(
        f"""kvmtune got the VM its pages whenever another method did: {met(succ)}; never touched another
node: {met(never_other)}; faster (median) than the script method wherever that succeeded:
{met(faster['script'])}; than one plain write: {met(faster['plain'])} (a plain write is a single
system call: where free memory needs no compaction it is done before kvmtune's process has
read the domain XML and journaled its change)."""
    )
    groups_order = sorted({f"{w}: {c}" for w, c, _, _ in verdicts})
    methods = ["kvmtune", "script", "plain"]

    def cell(m, g):
        trs = [tr for w, c, mm, tr in verdicts if mm == m and f"{w}: {c}" == g]
        if not trs:
            return None, False
        return statistics.median(t["ms"] for t in trs), not all(t["ok"] for t in trs)

    cells = [[cell(m, g) for g in groups_order] for m in methods]
    svgs["hugepages.svg"] = bars(
        "Hugepages for a VM on fragmented memory (median ms; pale ✗: the VM's node did not get them all)",
        groups_order,
        methods,
        [[v for v, _ in row] for row in cells],
        "ms",
        log=True,
        w=max(820, 130 * len(groups_order)),
        h=380,
        failed=[[bad for _, bad in row] for row in cells],
    )
    parts.append("\n![hugepages](bench/hugepages.svg)\n")
    return "\n".join(parts), (succ, never_other, faster["script"], faster["plain"])


def libvirt_section(lv):
    runs = lv["runs"]
    med = lambda arm, k: statistics.median(r[k] for r in runs if r["arm"] == arm)  # noqa: E731
    h, n = med("hook", "start_ms"), med("none", "start_ms")
    hd, nd = med("hook", "destroy_ms"), med("none", "destroy_ms")
    calls = ["| hook call (as libvirtd timed it) | median ms | n |", "| --- | ---: | ---: |"]
    merged = {}
    for c in lv["hook_calls"]:
        merged.setdefault(c["call"], []).extend(c["ms"])
    for call, xs in merged.items():
        if xs:
            calls.append(f"| `{call}` | {statistics.median(xs):.0f} | {len(xs)} |")
    count = sum(1 for r in runs if r["arm"] == "hook")
    return (
        f"""`virsh start` of a {lv['vm']['memory_mib']} MiB TCG domain on 2 MiB hugepages with its vCPU pinned to CPU 1 and
isolated (as scripts/demo.sh), until it returns with the domain running; `virsh destroy` after
each. With kvmtune as the hook, and with libvirtd restarted without any hook (the pages then
reserved beforehand, as a host without a hook must), {count} starts each, alternating in rounds;
libvirt {lv['libvirt']}.

| | median `virsh start` ms | median `virsh destroy` ms |
| --- | ---: | ---: |
| with kvmtune | {h:.0f} | {hd:.0f} |
| without a hook | {n:.0f} | {nd:.0f} |
| ratio | **{h / n:.2f}** | {hd / nd:.2f} |

{chr(10).join(calls)}
""",
        h / n,
    )


def watch_section(w):
    n, o = w["watch"], w["irq_watch"]
    shape = n["shape"]
    vms = ", ".join(f"{v['name']} ({len(v['vcpus'])} vCPUs on node {v['node']}{', the passthrough device' if v['device'] else ''})" for v in n["vms"])
    return f"""`kvmtune watch` on a host where nothing needs repairing: the fake root of section 1
({shape['nodes']} nodes, {shape['cpus']} CPUs, {shape['irqs']} IRQs, {shape['tasks']} processes, cgroup v1) with two isolated,
hugepage-backed VMs running, started by kvmtune's own code: {vms}; each with
a QEMU process named as libvirt names it and a `CPU N/KVM` thread per vCPU. The watcher runs
{n['passes']} passes in one process, its clock advanced by the watch interval ({n['watch_interval_ms']} ms) each time,
so that the full look (every task, every IRQ) and the metrics come every {n['metrics_interval_s']} s as on a host
({n['metrics_passes']} of them, each writing kvmtune.prom); CPU time is the process's user + system time
(getrusage) before and after, and an hour is 3600 s of such passes. `fakehost watch-cost`
(bench/fakehost/watchcost.rs); kvmtune {w['commit']}, {w['date']}, load {w['load']}.

| | CPU per hour | share of one CPU | a look | a full look + metrics, more |
| --- | ---: | ---: | ---: | ---: |
| `kvmtune watch` | **{n['cpu_s_per_hour']:.1f} s** | {n['cpu_s_per_hour'] / 36:.3f} % | {n['cheap_look_cpu_us']:.0f} µs CPU | {n['full_look_extra_cpu_ms']:.1f} ms CPU |
| `kvmtune irq-watch` (IRQs only, as before) | {o['cpu_s_per_hour']:.1f} s | {o['cpu_s_per_hour'] / 36:.3f} % | {o['cheap_look_cpu_us']:.0f} µs CPU | — |

A look reads the ledger, the VMs' device IRQs, each VM's QEMU command line (found once, then
checked), the pools and knobs kvmtune holds, what it set to confine host tasks, and the root
cgroup's processes (kernel threads remembered between looks). Every other IRQ of the host is read
only by the full look: that is most of what the old `irq-watch` spent at every look, which is
why the watcher that does everything costs less than the one that only pinned IRQs.
"""


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    check = "--check" in sys.argv
    results, out_dir = args
    m = load(results, "machine.json") or {}
    fh = load(results, "fakehost.json")
    if fh is None or "hook" not in fh or "scale" not in fh:
        sys.exit("report: no fake-root results (fakehost.json) in " + results)
    svgs = {}
    h = fh["hook"]
    sc = fh["scale"]
    noop = h["stats"]["noop kvmtune start"]["wall"]["median"]
    noop_cpu = h["stats"]["noop kvmtune start"]["cpu"]["median"]
    ratio = h["ratio_shell_over_kvmtune"]
    scale_ms = sc["base"]["prepare_release"]["wall"]["median"]
    scale_cpu = sc["base"]["prepare_release"]["cpu"]["median"]
    iso = load(results, "isolation.json")
    hv = load(results, "hypervisor-isolation.json")
    hp_host = load(results, "hugepages-host.json")
    hp_guest = load(results, "hugepages-guest.json")
    lv = load(results, "libvirt.json")
    wt = load(results, "watch.json")

    sections = []
    sections.append(("1. Hook overhead", hook_section(h, out_dir, svgs)))
    hp_text, hp_verdict = hugepages_section(hp_host, hp_guest, svgs)
    sections.append(("2. Hugepage reservation on fragmented memory (real kernels)", hp_text))
    if iso:
        iso_text, share, invol = isolation_section(iso, svgs)
    else:
        iso_text, share, invol = "Not run (bench/run.sh --quick runs only the fake-root sections).\n", None, None
    sections.append(("3. Isolation effectiveness (real kernel)", iso_text))
    if hv:
        sections.append(("3b. Isolation methods side by side (Debian 13 hypervisor guest)", hv_isolation_section(hv, svgs)))
    sections.append(("4. Scale (fake root)", scale_section(sc, svgs)))
    if lv:
        lv_text, lv_ratio = libvirt_section(lv)
    else:
        lv_text, lv_ratio = "Not run (bench/run.sh --quick runs only the fake-root sections).\n", None
    sections.append(("5. VM start through the real libvirtd", lv_text))
    if wt:
        sections.append(("6. The watcher's idle cost (fake root)", watch_section(wt)))

    summary = [
        "| target | measured | |",
        "| --- | --- | --- |",
        f"| a hook call with nothing to do < {TARGET_NOOP_MS:g} ms | {noop:.2f} ms median wall ({noop_cpu:.2f} ms CPU) | {met(noop < TARGET_NOOP_MS)} |",
        f"| full start/stop cycle ≥ {TARGET_RATIO:g}x faster than the shell way | {ratio:.1f}x (fake root, wall) | {met(ratio >= TARGET_RATIO)} |",
    ]
    if hp_verdict:
        succ, never, f_script, f_plain = hp_verdict
        summary.append(
            f"| hugepages: kvmtune succeeds whenever another method does | {'yes' if succ else 'no'} | {met(succ)} |"
        )
        summary.append(
            f"| … in less time | than the script: {'yes' if f_script else 'no'}; than a plain write: {'yes' if f_plain else 'no'} | {met(f_script and f_plain)} |"
        )
        summary.append(
            f"| … never touching another node | {'never did' if never else 'did'} | {met(never)} |"
        )
    if share is not None:
        summary.append(
            f"| isolated CPU: ≥ 99 % share, < 1 involuntary switch/s | {share * 100:.2f} %, {invol:.2f}/s | {met(share >= TARGET_SHARE and invol < TARGET_INVOL)} |"
        )
    shape = sc["base"]["shape"]
    summary.append(
        f"| {shape['nodes']} nodes / {shape['cpus']} CPUs / {shape['irqs']} IRQs / {shape['tasks']} tasks: prepare + release < {TARGET_SCALE_MS:g} ms | {scale_ms:.0f} ms median wall ({scale_cpu:.0f} ms CPU) | {met(scale_ms < TARGET_SCALE_MS)} |"
    )
    part = sc.get("partition")
    if part:
        pw_ms = part["prepare_release"]["wall"]["median"]
        pc_ms = part["prepare_release"]["cpu"]["median"]
        summary.append(
            f"| same host, cgroup v2 with isolated partitions, a `kvmtune run` VM: prepare + release < {TARGET_PARTITION_MS:g} ms | {pw_ms:.1f} ms median wall ({pc_ms:.1f} ms CPU) | {met(pw_ms < TARGET_PARTITION_MS)} |"
        )
    if lv_ratio is not None:
        summary.append(f"| `virsh start` with the hook / without | {lv_ratio:.2f} | (reported) |")
    if wt:
        per_hour = wt["watch"]["cpu_s_per_hour"]
        summary.append(f"| `kvmtune watch` idle with 2 isolated VMs: CPU per hour | {per_hour:.1f} s ({per_hour / 36:.3f} % of one CPU) | (reported) |")

    cmd = "bench/run.sh" + (" --quick" if fh.get("quick") else "")
    doc = f"""# kvmtune benchmarks

Written by `{cmd}` (see [How to run](#how-to-run)); the raw numbers are in `bench/results/`.
Each section says what was measured, how, and what the numbers mean; [caveats](#caveats) at the end.

## Machine

{section_machine(m)}

## Summary

{chr(10).join(summary)}

"""
    for title, text in sections:
        doc += f"## {title}\n\n{text}\n"
    fixes = load(results, "fixes.json")
    if fixes:
        doc += "## What these benchmarks changed in kvmtune\n\n"
        doc += "These before/after pairs were measured once each, when the fixes were made (the\n"
        doc += "sections above are this run's numbers).\n\n"
        for rnd in fixes["rounds"]:
            doc += rnd["intro"] + "\n\n"
            doc += "| measure | before | after |\n| --- | ---: | ---: |\n"
            for f in rnd["rows"]:
                doc += f"| {f['what']} | {f['before']} | {f['after']} |\n"
            doc += "\n"
    doc += CAVEATS.format(nproc=m.get("nproc", "?"))
    doc += HOWTO
    os.makedirs(os.path.join(out_dir, "bench"), exist_ok=True)
    with open(os.path.join(out_dir, "BENCHMARKS.md"), "w") as f:
        f.write(doc)
    for name, text in svgs.items():
        with open(os.path.join(out_dir, "bench", name), "w") as f:
            f.write(text)
    print(f"report: wrote {os.path.join(out_dir, 'BENCHMARKS.md')} and {len(svgs)} chart(s)")
    if check:
        # Loose: the numbers exist and are within 10x of their targets (CI machines are shared;
        # a file read costs several times more on a loaded VM). A lost fix (a journal
        # rewritten per change, every thread read per call) is far beyond that.
        problems = []
        if not noop < 10 * TARGET_NOOP_MS:
            problems.append(f"no-op hook call {noop:.2f} ms (10x the target is {10 * TARGET_NOOP_MS:g})")
        if not scale_ms < 10 * TARGET_SCALE_MS:
            problems.append(f"scale prepare+release {scale_ms:.0f} ms (10x the target is {10 * TARGET_SCALE_MS:g})")
        for k in ("kvmtune cycle", "shell cycle", "floor static exec"):
            if not h["stats"][k]["wall"]["n"] > 0:
                problems.append(f"no samples for {k}")
        print(f"bench check: no-op {noop:.2f} ms (target < {TARGET_NOOP_MS:g}: {'met' if noop < TARGET_NOOP_MS else 'missed'}), "
              f"cycle ratio {ratio:.1f}x (target {TARGET_RATIO:g}x: {'met' if ratio >= TARGET_RATIO else 'missed'}), "
              f"scale {scale_ms:.0f} ms (target < {TARGET_SCALE_MS:g}: {'met' if scale_ms < TARGET_SCALE_MS else 'missed'})")
        if part:
            # Reported, not checked: the partition target is far below what the host's scan of
            # every process costs today (section 4 says why).
            print(f"bench check: partition prepare+release {pw_ms:.1f} ms (target < {TARGET_PARTITION_MS:g}: "
                  f"{'met' if pw_ms < TARGET_PARTITION_MS else 'missed'})")
        if problems:
            print("bench check: 0 passed, 1 failed: " + "; ".join(problems))
            sys.exit(1)
        print("bench check: 1 passed, 0 failed")


CAVEATS = """## Caveats

- **{nproc} CPUs, shared.** This machine is a small VM that other jobs use at the same time; the
  load average is in the machine table. Wall times include waiting for a CPU; the CPU times and
  the file-operation counts do not, and ratios are taken within one run, variants interleaved.
- **Fake root.** Sections 1, 4 and 6 run on a tree of plain files on tmpfs laid out like /sys and
  /proc (bench/fakehost/layout.rs); the kernel's own work (allocating pages, moving tasks,
  reprogramming IRQs, dropping caches) is not counted, for kvmtune or for the scripts. A file
  read there costs a few microseconds, as on procfs. kvmtune's library runs in the benchmark's
  own executable for the calls that change the host (a plain tree cannot create a cgroup's
  files on mkdir; the fake root's file layer models that, bench/fakehost/model.rs); its
  start-up is measured against the real binary's in section 1.
- **The shell scripts are lean**: bash builtins where the guides use them, one `find`, a few
  `cat`/`grep`/`awk`. The tools users also call from such scripts (`cset`, a Python program;
  `systemctl`) are not measured here. On plain files the shield moves back at release only what
  the file shows (which favours the shell). kvmtune's cost in these calls is its reading of every
  process (section 4): on the 600-process host it is about what bash's process starts cost.
- **TCG guest.** The guest runs under QEMU's TCG emulation (no KVM here), so its times are many
  times slower than on hardware; compare them with each other, not with the host's.
- **This host has plenty of free memory** and one NUMA node: fragmenting most of it would hurt
  the other jobs, so its trials show cost and collateral (the page cache the script drops) more
  than failure; the guest's small nodes show failure and other-node pages.

"""

HOWTO = """## How to run

    bench/run.sh            # everything: builds, fake root, this host (root; takes the host lock), guest, libvirtd
    bench/run.sh --quick    # the fake-root sections only, fewer rounds, into a temp dir (what CI runs)
    bench/run.sh --only hook,scale,watch,isolation,hugepages,guest,libvirt   # a subset
    bench/run.sh --only partition   # only section 4's points on the host with isolated partitions

It writes `BENCHMARKS.md`, `bench/*.svg` and `bench/results/*.json`. Profiling one hook call on
the large fake host:

    env $(target/release/examples/fakehost setup /tmp/h 16 1024 8192 5000) \\
      valgrind --tool=callgrind target/release/examples/fakehost hook scale-vm prepare begin - < /tmp/h/vm.xml

and the same host with isolated partitions, the VM a `kvmtune run` one:

    env $(target/release/examples/fakehost setup /tmp/h 16 1024 8192 5000 6.18.0 partitions) \\
      target/release/examples/fakehost run-vm scale-vm prepare begin - < /tmp/h/vm.xml
"""

if __name__ == "__main__":
    main()
