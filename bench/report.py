#!/usr/bin/env python3
"""Turns bench/run.sh's results.tsv into the benchmark table.

usage: report.py RESULTS.tsv MACHINE.txt OUTDIR

Every figure is a median over the repetitions of one run.  Ratios and added
latencies are computed within each repetition (the columns of a repetition ran
back to back) and the median of those is shown, so that a noisy neighbour
slowing one repetition down does not favour one column.  Prints the table and
the target verdicts as Markdown, and writes OUTDIR/table.md and
OUTDIR/bench.svg.
"""
import os
import statistics
import sys
from collections import defaultdict

PROXIES = ["nginx", "haproxy", "zephyr"]
COLS = ["direct"] + PROXIES
CPU1 = " (all on one CPU)"


CRASHES = defaultdict(int)  # (phase, col) -> measurements during which the proxy died


def load(path):
    """Measurements during which the proxy died are counted, not used."""
    data = defaultdict(lambda: defaultdict(dict))  # (phase, level) -> col -> rep -> kv
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 5:
                continue
            phase, level, col, rep, kvs = parts[:5]
            kv = {}
            for tok in kvs.split():
                if "=" in tok:
                    k, v = tok.split("=", 1)
                    try:
                        kv[k] = float(v)
                    except ValueError:
                        kv[k] = v
            if kv.get("crashed"):
                # The proxy was found dead after this measurement.  When the
                # load tool saw no error it died afterwards (as wrk closed its
                # connections): the figures stand.  Otherwise they are left out.
                CRASHES[(phase, col)] += 1
                errs = sum(float(kv.get(k, 0) or 0) for k in
                           ("err_connect", "err_read", "err_write", "err_status", "err_timeout",
                            "failed", "incomplete"))
                if phase in ("short", "sse") and errs:
                    continue
            data[(phase, level)][col][rep] = kv
    return data


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def per_rep(d, col, key):
    return {r: kv.get(key) for r, kv in d.get(col, {}).items()}


def col_med(d, col, key):
    return med(per_rep(d, col, key).values())


def rep_ratio(d, a, b, key):
    """Median over repetitions of a[key] / b[key]."""
    ra, rb = per_rep(d, a, key), per_rep(d, b, key)
    xs = [ra[r] / rb[r] for r in ra if r in rb and ra[r] is not None and rb[r]]
    return med(xs)


def rep_added(d, col, key):
    """Median over repetitions of col[key] - direct[key]."""
    rc, rd = per_rep(d, col, key), per_rep(d, "direct", key)
    xs = [rc[r] - rd[r] for r in rc if r in rd and rc[r] is not None and rd[r] is not None]
    return med(xs)


def rep_added_diff(d, a, b, key):
    """Median over repetitions of (a - direct) - (b - direct) = a - b."""
    ra, rb = per_rep(d, a, key), per_rep(d, b, key)
    xs = [ra[r] - rb[r] for r in ra if r in rb and ra[r] is not None and rb[r] is not None]
    return med(xs)


def fnum(x, nd=2):
    if x is None:
        return "–"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.{nd}f}"


def fratio(x):
    return "–" if x is None else f"{x:.2f}x"


def fms(us, signed=False):
    if us is None:
        return "–"
    v = us / 1000.0
    return f"{v:+.3f}" if signed else f"{v:.3f}"


def main():
    res, machine, outdir = sys.argv[1], sys.argv[2], sys.argv[3]
    data = load(res)
    rows = []  # (label, [direct, nginx, haproxy, zephyr], vs nginx, vs haproxy, extra)
    targets = []
    reps = 0

    # ---- short requests ----
    for c in ["1", "50", "256"]:
        d = data.get(("short", c))
        if not d:
            continue
        reps = max(reps, len(d.get("zephyr", {})))
        cells = [fnum(col_med(d, k, "rps"), 0) for k in COLS]
        n2 = col_med(d, "nginx2", "rps")
        rows.append((f"short, {c} conn{CPU1 if c == '1' else ''}: req/s", cells, fratio(rep_ratio(d, "zephyr", "nginx", "rps")),
                     fratio(rep_ratio(d, "zephyr", "haproxy", "rps")), fnum(n2, 0)))
        for p in ["p50", "p99"]:
            key = f"{p}_us"
            cells = [fms(col_med(d, "direct", key))]
            for k in PROXIES:
                cells.append(f"{fms(col_med(d, k, key))} ({fms(rep_added(d, k, key), True)})")
            rows.append((f"short, {c} conn{CPU1 if c == '1' else ''}: {p} ms (added)", cells,
                         fms(rep_added_diff(d, "zephyr", "nginx", key), True) + " ms",
                         fms(rep_added_diff(d, "zephyr", "haproxy", key), True) + " ms",
                         fms(col_med(d, "nginx2", key))))
        errs = {k: sum(int(kv.get(e, 0) or 0) for kv in d.get(k, {}).values()
                       for e in ["err_connect", "err_read", "err_write", "err_status", "err_timeout",
                                 "failed"]) for k in COLS}
        if any(errs.values()):
            rows.append((f"short, {c} conn: errors (all runs)", [str(errs[k]) for k in COLS], "", "", ""))
        if c == "50":
            r = rep_ratio(d, "zephyr", "nginx", "rps")
            targets.append(("short requests, 50 conns: req/s >= 0.8x nginx", r is not None and r >= 0.8,
                            f"{fratio(r)} nginx"))
        if c == "1":
            a = rep_added_diff(d, "zephyr", "nginx", "p50_us")
            targets.append(("added p50 latency (1 conn) <= nginx's + 0.1 ms", a is not None and a <= 100,
                            f"zephyr adds {fms(rep_added(d, 'zephyr', 'p50_us'))} ms, nginx "
                            f"{fms(rep_added(d, 'nginx', 'p50_us'))} ms: difference {fms(a, True)} ms"))

    # ---- SSE ----
    for n in ["1", "100", "1000"]:
        d = data.get(("sse", n))
        if not d:
            continue
        for key, name in [("ttfe_p50_us", "time to first event p50"), ("ttfe_p99_us", "time to first event p99"),
                          ("ttft_p50_us", "time to first token p50"), ("ttft_p99_us", "time to first token p99")]:
            cells = [fms(col_med(d, "direct", key))]
            for k in PROXIES:
                cells.append(f"{fms(col_med(d, k, key))} ({fms(rep_added(d, k, key), True)})")
            rows.append((f"SSE, {n} streams: {name} ms (added)", cells,
                         fms(rep_added_diff(d, "zephyr", "nginx", key), True) + " ms",
                         fms(rep_added_diff(d, "zephyr", "haproxy", key), True) + " ms", ""))
        for key, name in [("ev_p50_us", "event delay p50"), ("ev_p99_us", "event delay p99")]:
            cells = [fms(col_med(d, "direct", key))]
            for k in PROXIES:
                cells.append(fms(rep_added(d, k, key), True))
            rows.append((f"SSE, {n} streams: {name} ms (direct: own jitter; proxies: added)", cells,
                         fms(rep_added_diff(d, "zephyr", "nginx", key), True) + " ms",
                         fms(rep_added_diff(d, "zephyr", "haproxy", key), True) + " ms", ""))
        bad = {k: sum(int(kv.get("failed", 0) or 0) + int(kv.get("incomplete", 0) or 0)
                      for kv in d.get(k, {}).values()) for k in COLS}
        if any(bad.values()):
            rows.append((f"SSE, {n} streams: failed or incomplete (all runs)", [str(bad[k]) for k in COLS],
                         "", "", ""))
        if n == "1000":
            a = rep_added(d, "zephyr", "ev_p99_us")
            targets.append(("added per-event delay p99 at 1,000 streams < 1 ms", a is not None and a < 1000,
                            f"{fms(a, True)} ms (nginx {fms(rep_added(d, 'nginx', 'ev_p99_us'), True)} ms, "
                            f"haproxy {fms(rep_added(d, 'haproxy', 'ev_p99_us'), True)} ms)"))

    # ---- 10k streams ----
    for (phase, level), d in sorted(data.items()):
        if phase != "big":
            continue
        kv = {k: next(iter(d[k].values()), {}) for k in COLS if k in d}
        cells = []
        for k in COLS:
            x = kv.get(k, {})
            cells.append(f"{int(x.get('ok', 0))}/{int(x.get('streams', 0))} (max open {int(x.get('open_max', 0))})"
                         if x else "–")
        rows.append((f"{level} streams: completed", cells, "", "", ""))
        per = {}
        peak = {}
        for k in PROXIES:
            x = kv.get(k, {})
            if x and x.get("peak_kb"):
                peak[k] = x["peak_kb"] / 1024.0
                per[k] = (x["peak_kb"] - x.get("idle_kb", 0)) / float(level)
        rows.append((f"{level} streams: peak RSS of the proxy, MB", ["–"] + [fnum(peak.get(k)) for k in PROXIES],
                     fratio(peak["zephyr"] / peak["nginx"]) if "zephyr" in peak and "nginx" in peak else "–",
                     fratio(peak["zephyr"] / peak["haproxy"]) if "zephyr" in peak and "haproxy" in peak else "–",
                     ""))
        rows.append((f"{level} streams: memory per stream, KB", ["–"] + [fnum(per.get(k)) for k in PROXIES],
                     fratio(per["zephyr"] / per["nginx"]) if "zephyr" in per and "nginx" in per else "–",
                     fratio(per["zephyr"] / per["haproxy"]) if "zephyr" in per and "haproxy" in per else "–",
                     ""))
        for key, name in [("ttfe_p99_us", "time to first event p99, ms (added)"),
                          ("ev_p99_us", "event delay p99, ms (direct: own jitter; proxies: added)")]:
            dv = kv.get("direct", {}).get(key)
            cells = [fms(dv)]
            for k in PROXIES:
                v = kv.get(k, {}).get(key)
                cells.append("–" if v is None or dv is None else
                             (fms(v - dv, True) if key.startswith("ev") else f"{fms(v)} ({fms(v - dv, True)})"))
            rows.append((f"{level} streams: {name}", cells, "", "", ""))
        z = kv.get("zephyr", {})
        ok_all = bool(z) and z.get("ok") == z.get("streams") and z.get("open_max") == z.get("streams")
        targets.append((f"memory per idle stream at {level} streams <= 16 KB (all complete)",
                        ok_all and per.get("zephyr") is not None and per["zephyr"] <= 16,
                        f"{fnum(per.get('zephyr'))} KB, {int(z.get('ok', 0))}/{int(z.get('streams', 0))} complete, "
                        f"{int(z.get('open_max', 0))} open at once (nginx {fnum(per.get('nginx'))} KB, "
                        f"haproxy {fnum(per.get('haproxy'))} KB)"))

    # ---- idle ----
    d = data.get(("idle", "0"))
    if d:
        rss = {k: col_med(d, k, "rss_kb") for k in PROXIES}
        priv = {k: col_med(d, k, "priv_kb") for k in PROXIES}
        st = {k: col_med(d, k, "startup_us") for k in PROXIES}
        rows.append(("idle RSS, MB (nginx: master + worker)", ["–"] + [fnum(rss[k] / 1024 if rss[k] else None) for k in PROXIES],
                     fratio(rep_ratio(d, "zephyr", "nginx", "rss_kb")),
                     fratio(rep_ratio(d, "zephyr", "haproxy", "rss_kb")), ""))
        rows.append(("idle private memory (not shared library pages), MB",
                     ["–"] + [fnum(priv[k] / 1024 if priv[k] else None) for k in PROXIES],
                     fratio(rep_ratio(d, "zephyr", "nginx", "priv_kb")),
                     fratio(rep_ratio(d, "zephyr", "haproxy", "priv_kb")), ""))
        rows.append(("start-up to first proxied answer, ms", ["–"] + [fms(st[k]) for k in PROXIES],
                     fratio(rep_ratio(d, "zephyr", "nginx", "startup_us")),
                     fratio(rep_ratio(d, "zephyr", "haproxy", "startup_us")), ""))
        z = rss["zephyr"]
        targets.append(("idle resident memory < 8 MB", z is not None and z < 8 * 1024,
                        f"{fnum(z / 1024 if z else None)} MB RSS, of which "
                        f"{fnum(priv['zephyr'] / 1024 if priv['zephyr'] else None)} MB private "
                        f"(nginx {fnum(rss['nginx'] / 1024 if rss['nginx'] else None)} MB, "
                        f"haproxy {fnum(rss['haproxy'] / 1024 if rss['haproxy'] else None)} MB)"))

    # ---- failover ----
    d = data.get(("failover", "50"))
    if d:
        fails = {k: sum(int(kv.get("failed", 0) or 0) for kv in d.get(k, {}).values()) for k in PROXIES}
        nrun = {k: len(d.get(k, {})) for k in PROXIES}
        rec = {k: col_med(d, k, "recover_us") for k in PROXIES}
        okr = {k: col_med(d, k, "rps") for k in PROXIES}
        rows.append(("failover, 50 conns: failed requests (all runs)",
                     ["–"] + [f"{fails[k]} in {nrun[k]} runs" for k in PROXIES], "", "", ""))
        rows.append(("failover: kill to all traffic healthy, ms",
                     ["–"] + [fms(rec[k]) for k in PROXIES], "", "", ""))
        rows.append(("failover: req/s over the 5 s run", ["–"] + [fnum(okr[k], 0) for k in PROXIES],
                     fratio(rep_ratio(d, "zephyr", "nginx", "rps")),
                     fratio(rep_ratio(d, "zephyr", "haproxy", "rps")), ""))
        targets.append(("zero client-visible failures in the failover row", nrun["zephyr"] > 0 and fails["zephyr"] == 0,
                        f"{fails['zephyr']} failed in {nrun['zephyr']} runs (nginx {fails['nginx']}, "
                        f"haproxy {fails['haproxy']})"))

    # ---- cpu ----
    d = data.get(("cpu", "8"))
    if d:
        ipr = {}
        for k in PROXIES:
            kv = next(iter(d.get(k, {}).values()), {})
            if kv.get("ir") and kv.get("ok"):
                ipr[k] = kv["ir"] / kv["ok"]
        rows.append(("CPU: instructions per proxied request (callgrind)",
                     ["–"] + [fnum(ipr.get(k), 0) for k in PROXIES],
                     fratio(ipr["zephyr"] / ipr["nginx"]) if "zephyr" in ipr and "nginx" in ipr else "–",
                     fratio(ipr["zephyr"] / ipr["haproxy"]) if "zephyr" in ipr and "haproxy" in ipr else "–", ""))

    if CRASHES:
        cr = defaultdict(int)
        for (ph, col), n in CRASHES.items():
            cr[col] += n
        rows.append(("proxy found dead after a measurement (restarted)",
                     [str(cr.get(k, 0)) for k in COLS], "", "", ""))
        targets.append(("no crash under load", cr.get("zephyr", 0) == 0,
                        ", ".join(f"{ph}: {n}" for (ph, col), n in sorted(CRASHES.items()) if col == "zephyr")
                        or "none"))

    # ---- print ----
    lines = []
    with open(machine) as f:
        lines.append("Machine: " + "; ".join(l.strip() for l in f if l.strip()))
    lines.append(f"Medians over {reps} repetitions (short and SSE rows); ratios and added times are "
                 "computed per repetition, then the median is taken.")
    lines.append("")
    lines.append("| row | direct | nginx | haproxy | claude-zephyr | zephyr vs nginx | zephyr vs haproxy | nginx, 2 workers |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for label, cells, vn, vh, extra in rows:
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {vn} | {vh} | {extra} |")
    lines.append("")
    lines.append("Targets (claude-zephyr, ratios from this run):")
    lines.append("")
    for name, ok, detail in targets:
        lines.append(f"- {'MET ' if ok else 'MISSED'} {name}: {detail}")
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    with open(os.path.join(outdir, "table.md"), "w") as f:
        f.write(text)
    write_svg(data, os.path.join(outdir, "bench.svg"))


def write_svg(data, path):
    """Two small bar charts: req/s relative to direct, and memory per stream
    (the dashed lines: direct's req/s, and the 16 KB target)."""
    colors = {"nginx": "#4e79a7", "haproxy": "#f28e2b", "zephyr": "#59a14f"}
    panels = []
    g1 = []
    for c in ["1", "50", "256"]:
        d = data.get(("short", c))
        if d:
            g1.append((f"{c} conn", {k: rep_ratio(d, k, "direct", "rps") for k in PROXIES}))
    panels.append(("short requests: req/s relative to direct", g1, 1.0, "{:.2f}"))
    g2 = []
    for (phase, level), d in sorted(data.items()):
        if phase != "big":
            continue
        per = {}
        for k in PROXIES:
            kv = next(iter(d.get(k, {}).values()), {})
            if kv.get("peak_kb"):
                per[k] = (kv["peak_kb"] - kv.get("idle_kb", 0)) / float(level)
        g2.append((f"{level} concurrent streams", per))
    panels.append(("resident memory per open stream, KB", g2, 16.0, "{:.1f}"))
    W, H, PW = 760, 300, 360
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
           f'<rect width="{W}" height="{H}" fill="white"/>']
    for pi, (title, groups, ref, fmt) in enumerate(panels):
        x0, y0, ph = 20 + pi * (PW + 20), 40, 200
        out.append(f'<text x="{x0}" y="20" font-size="13">{title}</text>')
        vals = [v for _, g in groups for v in g.values() if v is not None]
        top = max(vals + [ref or 0, 0.001]) * 1.15
        lo = min(vals + [0])
        span = top - lo
        base = y0 + ph * top / span
        out.append(f'<line x1="{x0}" y1="{base:.1f}" x2="{x0 + PW}" y2="{base:.1f}" stroke="#333"/>')
        if ref is not None:
            ry = y0 + ph * (top - ref) / span
            out.append(f'<line x1="{x0}" y1="{ry:.1f}" x2="{x0 + PW}" y2="{ry:.1f}" stroke="#999" stroke-dasharray="4 3"/>')
        gw = PW / max(1, len(groups))
        for gi, (gname, g) in enumerate(groups):
            for ki, k in enumerate(PROXIES):
                v = g.get(k)
                if v is None:
                    continue
                bx = x0 + gi * gw + 10 + ki * (gw - 20) / 3
                bw = (gw - 20) / 3 - 4
                y = y0 + ph * (top - max(v, 0)) / span
                h = abs(v) * ph / span
                out.append(f'<rect x="{bx:.1f}" y="{(y if v >= 0 else base):.1f}" width="{bw:.1f}" '
                           f'height="{h:.1f}" fill="{colors[k]}"/>')
                out.append(f'<text x="{bx + bw / 2:.1f}" y="{(y - 3 if v >= 0 else base + h + 11):.1f}" '
                           f'text-anchor="middle">{fmt.format(v)}</text>')
            out.append(f'<text x="{x0 + gi * gw + gw / 2:.1f}" y="{y0 + ph + 30}" text-anchor="middle">{gname}</text>')
    for i, k in enumerate(PROXIES):
        out.append(f'<rect x="{20 + i * 110}" y="{H - 22}" width="12" height="12" fill="{colors[k]}"/>')
        out.append(f'<text x="{36 + i * 110}" y="{H - 12}">{"claude-zephyr" if k == "zephyr" else k}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
