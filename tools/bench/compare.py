#!/usr/bin/python3
"""cbrick's compiled plan against PyTorch on the same backbone, weights and input.

    tools/bench/compare.py CONFIG [--shape 1x3x224x224] [--threads 1 2] [--iters 20]
                           [--warmup 3] [--warmup-s 1.0] [--rounds 3] [--build build]
                           [--isa avx2]

Builds the model with tools/fixtures/resnet.py's PyTorch reference, draws conditioned random
weights (every residual branch and BatchNorm moves the outputs; mmseg's default init zeroes
each block's last BatchNorm, which would hide the convolutions before it), saves them as
safetensors and checks that cbrick's outputs on them agree with PyTorch's in float64 (within
1e-4 relative L2, or 3x PyTorch's own float32 error where that is larger). Then times,
alternating round by round with the same thread count: cbrick bench (--json), PyTorch eager
and frozen TorchScript (torch.jit.freeze + optimize_for_inference), each in its own process so
that peak RSS is measured per runner, each warmed up for at least --warmup-s seconds first (a
VM that has squeezed its vCPUs onto one core while a runner started should spread them again
before the timing). Prints a table of medians and ratios, the ratios round by round (a round
whose threads shared a core, by the FMA peak measured before and after it, is marked and left
out of a second median), the cache-line round trip between two threads next to each round (which
tells whether the VM's vCPUs shared a cache then; where rounds of both states occurred, the
ratios' median in each state), and the FMA peak (cbrick bench --peak) as a
reference for GFLOP/s.
--isa avx2 caps both at AVX2, as on processors without AVX-512 (CBRICK_ISA for cbrick,
ATEN_CPU_CAPABILITY and DNNL_MAX_CPU_ISA for PyTorch and its oneDNN).
"""
import argparse
import datetime
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

SPREAD = 0.75  # of the best FMA peak: below it, a round's threads shared a core
SHARED_NS = 250  # a round trip up to this: the two threads' cores shared a cache
APART_NS = 350  # from this on: they did not
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools", "fixtures"))


def parse_shape(text):
    return [int(v) for v in text.split("x")]


def backbone_cfg(cbrick, config):
    out = subprocess.run([cbrick, "config", config], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)["model"]["backbone"]


def torch_model(cfg, weights):
    import torch
    import resnet
    import st
    model = resnet.from_cfg(cfg)
    state = st.load(weights)
    model.load_state_dict(state, strict=True)
    model.eval()
    return model


def torch_worker(args):
    """Runs in its own process: prints one JSON object with the timings and peak RSS."""
    import torch
    torch.set_num_threads(args.threads[0])
    cfg = json.loads(args.cfg_json)
    model = torch_model(cfg, args.weights)
    x = torch.randn(*parse_shape(args.shape), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        if args.worker == "frozen":
            traced = torch.jit.trace(model, x, strict=False)
            model = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
        start, done = time.perf_counter(), 0
        while done < args.warmup or time.perf_counter() - start < args.warmup_s:
            model(x)
            done += 1
        times = []
        for _ in range(args.iters):
            t0 = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t0) * 1e3)
    print(json.dumps({"median_ms": statistics.median(times), "min_ms": min(times),
                      "max_ms": max(times), "peak_rss_bytes": peak_rss()}))


def peak_rss():
    """VmHWM of this process image (ru_maxrss would include the parent's RSS at fork)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_json(cmd, env=None):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def rel_l2(a, b):
    import torch
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b).clamp_min(1e-30))


def conditioned_weights(cfg, shape, path):
    import torch
    import resnet
    import st
    gen = torch.Generator().manual_seed(0)
    model = resnet.from_cfg(cfg).eval()
    resnet.condition(model, torch.randn(*shape, generator=gen), gen)
    st.save(path, {k: v for k, v in model.state_dict().items() if v.dim() > 0})


def check_agreement(cbrick, config, cfg, shape, tmp):
    """cbrick's outputs (plan) on a saved input against PyTorch eager on the same input."""
    import numpy as np
    import torch
    import st
    weights = os.path.join(tmp, "weights.safetensors")
    conditioned_weights(cfg, shape, weights)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    np.save(os.path.join(tmp, "x.npy"), x.numpy())
    out = os.path.join(tmp, "out.safetensors")
    subprocess.run([cbrick, "--quiet", "run", config, "--input", os.path.join(tmp, "x.npy"),
                    "--weights", weights, "--output", out], check=True, capture_output=True)
    model = torch_model(cfg, weights)
    with torch.no_grad():
        torch_f32 = model(x)
        exact = model.double()(x.double())
    got = st.load(out)
    errors = [rel_l2(got[f"feat.{i}"].double(), w) for i, w in enumerate(exact)]
    torch_errors = [rel_l2(t.double(), w) for t, w in zip(torch_f32, exact)]
    return weights, errors, torch_errors


def agrees(errors, torch_errors):
    """Within 1e-4 of float64, or (where the weights make float32 itself that far off, as
    large random DCN offsets do) within 3x of PyTorch's own float32 error."""
    return all(e <= max(1e-4, 3 * t) for e, t in zip(errors, torch_errors))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config")
    p.add_argument("--shape", default="1x3x224x224")
    p.add_argument("--threads", type=int, nargs="+", default=[1])
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--warmup-s", type=float, default=1.0,
                   help="least warm-up time of each runner, seconds")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--no-frozen", action="store_true", help="skip frozen TorchScript")
    p.add_argument("--isa", choices=["avx2"], help="cap cbrick and PyTorch at this instruction set")
    p.add_argument("--worker", choices=["eager", "frozen"], help=argparse.SUPPRESS)
    p.add_argument("--weights", help=argparse.SUPPRESS)
    p.add_argument("--cfg-json", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return torch_worker(args)
    if args.isa:  # before PyTorch loads; the runners inherit it
        os.environ.update(CBRICK_ISA=args.isa, ATEN_CPU_CAPABILITY=args.isa,
                          DNNL_MAX_CPU_ISA=args.isa.upper())

    import torch
    cbrick = os.path.join(args.build, "bin", "cbrick")
    cfg = backbone_cfg(cbrick, args.config)
    shape = parse_shape(args.shape)
    with tempfile.TemporaryDirectory(prefix="cbrick-bench.") as tmp:
        weights, errors, torch_errors = check_agreement(cbrick, args.config, cfg, shape, tmp)
        print(f"# {args.config} {args.shape}: relative L2 to PyTorch float64 per output: cbrick "
              + ", ".join(f"{e:.2e}" for e in errors) + "; PyTorch float32 "
              + ", ".join(f"{e:.2e}" for e in torch_errors))
        if not agrees(errors, torch_errors):
            print("# outputs DISAGREE", file=sys.stderr)
            return 1
        rows = []
        for threads in args.threads:
            rows.append(compare(args, cbrick, cfg, weights, threads))
    # the best of three: a busy machine only lowers it
    peak = {threads: max(peak_and_round_trip(cbrick, threads)[0] for _ in range(3))
            for threads in args.threads}
    print_table(args, rows, peak, torch.__version__)
    return 0


def cbrick_warmup(args, cbrick, weights, threads):
    """Warm-up iterations that last at least --warmup-s, from a short probe run."""
    probe = run_json([cbrick, "--quiet", "bench", args.config, "--weights", weights, "--shape",
                      args.shape, "--threads", str(threads), "--iters", "3", "--warmup", "1",
                      "--json"])
    return max(args.warmup, math.ceil(args.warmup_s * 1e3 / max(probe["min_ms"], 1e-3)))


def compare(args, cbrick, cfg, weights, threads):
    warmup = cbrick_warmup(args, cbrick, weights, threads)
    runners = {
        "cbrick": [cbrick, "--quiet", "bench", args.config, "--weights", weights, "--shape",
                   args.shape, "--threads", str(threads), "--iters", str(args.iters), "--warmup",
                   str(warmup), "--json"],
        "eager": [sys.executable, os.path.abspath(__file__), args.config, "--worker", "eager"],
    }
    if not args.no_frozen:
        runners["frozen"] = [sys.executable, os.path.abspath(__file__), args.config, "--worker",
                             "frozen"]
    common = ["--weights", weights, "--cfg-json", json.dumps(cfg), "--shape", args.shape,
              "--threads", str(threads), "--iters", str(args.iters), "--warmup", str(args.warmup),
              "--warmup-s", str(args.warmup_s)]
    results = {name: [] for name in runners}
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    several = threads > 1
    states = [peak_and_round_trip(cbrick, threads)] if several else []
    for _ in range(args.rounds):
        for name, cmd in runners.items():
            results[name].append(run_json(cmd + (common if name != "cbrick" else []), env))
        if several:
            states.append(peak_and_round_trip(cbrick, threads))
    row = {"threads": threads,
           "spread": spread_rounds([p for p, _ in states]) if several else [True] * args.rounds,
           "round_trips": [t for _, t in states if t is not None]}
    for name, rs in results.items():
        row[name] = {"median_ms": statistics.median(r["median_ms"] for r in rs),
                     "min_ms": min(r["min_ms"] for r in rs),
                     "peak_rss_bytes": max(r["peak_rss_bytes"] for r in rs)}
    row["rounds"] = {name: [r["median_ms"] for r in rs] for name, rs in results.items()}
    row["gflops"] = statistics.median(r["gflops"] for r in results["cbrick"])
    row["flops"] = results["cbrick"][0]["flops"]
    return row


def peak_and_round_trip(cbrick, threads):
    """The FMA peak, and on two threads or more the cache-line round trip between two of them
    (None on one)."""
    out = run_json([cbrick, "bench", "--peak", "--threads", str(threads), "--json"])
    return out["peak_gflops"], out.get("round_trip_ns")


def spread_rounds(peaks):
    """Whether each round ran with its threads on separate cores: the FMA peak measured just
    before and just after it within SPREAD of the best one of the run (a VM that squeezes its
    vCPUs onto one core halves it)."""
    best = max(peaks)
    ok = [p >= SPREAD * best for p in peaks]
    return [ok[i] and ok[i + 1] for i in range(len(peaks) - 1)]


def round_ratios(r, name):
    return [c / o for c, o in zip(r["rounds"]["cbrick"], r["rounds"][name])]


def rounds_in_state(round_trips, rounds, low, high):
    """The rounds whose round trips before and after both lie in [low, high]."""
    if len(round_trips) != rounds + 1:
        return []
    inside = [low <= t <= high for t in round_trips]
    return [i for i in range(rounds) if inside[i] and inside[i + 1]]


def median_over(ratios, rounds, what):
    """', M over the N rounds WHAT' (M the ratios' median over those rounds), or '' where there
    are none or they are all the rounds."""
    if not rounds or len(rounds) == len(ratios):
        return ""
    plural = "s" if len(rounds) > 1 else ""
    return (f", {statistics.median(ratios[i] for i in rounds):.3f} over the {len(rounds)} "
            f"round{plural} {what}")


def print_round_ratios(r):
    """Per-round ratios: the contenders of one round ran back to back, so a slow stretch of
    the machine moves both. Their median over all rounds, over the rounds whose threads had a
    core each where some did not, and over the rounds in each of the machine's two states
    (cores that share a cache, and cores that do not) where both occurred."""
    spread = r["spread"]
    kept = [i for i, ok in enumerate(spread) if ok]
    shared = rounds_in_state(r["round_trips"], len(spread), 0, SHARED_NS)
    apart = rounds_in_state(r["round_trips"], len(spread), APART_NS, math.inf)
    for name in [n for n in r["rounds"] if n != "cbrick"]:
        ratios = round_ratios(r, name)
        line = (f"# {r['threads']} thr, cbrick/{name} per round: "
                + " ".join(f"{x:.3f}" + ("" if ok else "*") for x, ok in zip(ratios, spread))
                + f"; median {statistics.median(ratios):.3f}"
                + median_over(ratios, kept, "without *"))
        if shared and apart:
            line += (median_over(ratios, shared, "with a shared cache")
                     + median_over(ratios, apart, "without one"))
        print(line)
    if not all(spread):
        print(f"# {r['threads']} thr, *: the FMA peak next to the round fell below "
              f"{SPREAD:.0%} of the run's best (the threads shared a core)")
    if r["round_trips"]:
        print(f"# {r['threads']} thr, cache-line round trip between two threads before each "
              f"round and after the last (up to {SHARED_NS} ns: cores that share a cache; "
              f"{APART_NS} and more: not): "
              + " ".join(f"{t:.0f}" for t in r["round_trips"]) + " ns")


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def print_table(args, rows, peak, torch_version):
    print(f"# {datetime.datetime.now().isoformat(timespec='seconds')}  CPU: {cpu_model()}  "
          f"PyTorch {torch_version}  {args.rounds} alternating rounds x {args.iters} iterations")
    print(f"# {args.config} {args.shape}"
          + (f", instruction sets capped at {args.isa.upper()}" if args.isa else ""))
    head = (f"{'thr':>3} {'cbrick ms':>10} {'eager ms':>9} {'frozen ms':>9} {'cb/eager':>8} "
            f"{'cb/frozen':>9} {'GFLOP/s':>8} {'%peak':>6} {'cb RSS MiB':>10} {'eager RSS':>9} "
            f"{'RSS ratio':>9}")
    print(head)
    for r in rows:
        cb, eager = r["cbrick"], r["eager"]
        frozen = r.get("frozen")
        fz = f"{frozen['median_ms']:9.2f}" if frozen else f"{'-':>9}"
        fr = f"{cb['median_ms'] / frozen['median_ms']:9.3f}" if frozen else f"{'-':>9}"
        pk = peak[r["threads"]]
        print(f"{r['threads']:>3} {cb['median_ms']:10.2f} {eager['median_ms']:9.2f} {fz} "
              f"{cb['median_ms'] / eager['median_ms']:8.3f} {fr} {r['gflops']:8.1f} "
              f"{100 * r['gflops'] / pk:5.1f}% {cb['peak_rss_bytes'] / 2**20:10.1f} "
              f"{eager['peak_rss_bytes'] / 2**20:9.1f} "
              f"{cb['peak_rss_bytes'] / eager['peak_rss_bytes']:9.3f}")
    for r in rows:
        for name, ms in r["rounds"].items():
            print(f"# {r['threads']} thr, {name} per round: " + " ".join(f"{v:.2f}" for v in ms))
        print_round_ratios(r)
    print("# FMA peak (cbrick bench --peak): "
          + ", ".join(f"{t} thr {v:.0f} GFLOP/s" for t, v in peak.items()))
    print("# GFLOP/s counts the direct convolution's FLOPs; Winograd layers execute fewer, so "
          "%peak may pass 100")


if __name__ == "__main__":
    sys.exit(main())
