"""Benchmark: average 10 xlm-roberta-base-size snapshots (1.1 GB each) from a local folder and from S3.

Run it (opt-in, not part of pytest; needs ~25 GB free on the cache's disk):

    .venv/bin/python bench/average/bench_average.py --cache /tmp/bench-average [--mergekit /tmp/mergekit-venv]

It writes the snapshots once into --cache (random weights from XLMRobertaConfig of base size,
a LocalStore with manifests), then times, each in its own subprocess with its anonymous memory
(RssAnon) sampled every 5 ms: `cat` of the same files, our streaming average (the bare pass and
the whole job with commit, with and without the per-machine sha256 record), naive
load-all-then-mean, the seed's method (load each state dict whole, scale and add in place), and
mergekit's linear merge when a venv with mergekit 0.1.5 is given. Page-cached files throughout
(each is read once before timing). Then, against a local SeaweedFS S3 server, in --rounds
interleaved rounds: our pipelined download with and without its sha256 pass, the previous
boto3 `download_file` path, `rclone copy` (Debian's rclone, when installed: the parallel-client
yardstick) and our whole average job; ratios per round in `s3-summary`. `--s3-only` runs only
that part and merges it into --out. Prints a JSON summary.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PY = str(REPO / ".venv" / "bin" / "python")
N = 10
BASE_SIZE = "vocab_size=250002, max_position_embeddings=514, type_vocab_size=1, num_labels=3"
# --tiny: a few-MB model, to check that the script runs (its numbers mean nothing)
TINY_SIZE = "vocab_size=1000, max_position_embeddings=514, type_vocab_size=1, num_labels=3, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64"


def rss_anon(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def seconds(result: dict) -> float:
    """The time to compare: a Python body's own timing after its imports (`inner_s`, what
    the work costs; the interpreter and torch import add ~2-3 s to every process here), else
    the process's wall time (`cat`)."""
    return result.get("inner_s", result["wall_s"])


def measure(cmd: list[str], env: dict | None = None, cwd: str | None = None, discard: bool = False) -> dict:
    """Wall time, peak RssAnon of the process, and the child's own report (REPORT {json})."""
    # start clean: no dirty pages of the previous measurement's output being written back
    # (the kernel's writeback would run on the same two cores as this one)
    os.sync()
    t0 = time.perf_counter()
    stdout = subprocess.DEVNULL if discard else subprocess.PIPE
    proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE, env=env, cwd=cwd, text=True)
    peak = 0
    samples = []

    def sample():
        nonlocal peak
        while proc.poll() is None:
            v = rss_anon(proc.pid)
            samples.append(v)
            peak = max(peak, v)
            time.sleep(0.005)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    th.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed ({proc.returncode}): {err[-3000:]}")
    report = {}
    for line in (out or "").splitlines():
        if line.startswith("REPORT "):
            report = json.loads(line[len("REPORT "):])
    return {"wall_s": wall, "peak_anon": peak, **report}


# ------------------------------------------------------------------------------------------
# The subprocess bodies (each prints REPORT {json}: its own timing after imports and its baseline)
# ------------------------------------------------------------------------------------------

PRELUDE = textwrap.dedent(
    """
    import json, os, sys, time, threading
    def anon():
        for line in open('/proc/self/status'):
            if line.startswith('RssAnon:'):
                return int(line.split()[1]) * 1024
    PEAK = [0]
    def _sampler():
        while True:
            PEAK[0] = max(PEAK[0], anon()); time.sleep(0.002)
    """
)

BODIES = {
    "ours-pass": """
import torch
from jobs.averaging.engine import Output, stream_average
from jobs.averaging.inputs import validate_inputs
from jobs.tensorio import MappedFile
files = sys.argv[1].split(',')
out = sys.argv[2]
base = anon(); threading.Thread(target=_sampler, daemon=True).start()
t = time.perf_counter()
mapped = {f: MappedFile(f) for f in files}
infos = validate_inputs(mapped, {f: {} for f in files})
stream_average(mapped, infos, [Output('avg', 'uniform', [(f, 1.0) for f in files], float(len(files)))], {'avg': out})
dt = time.perf_counter() - t
print('REPORT ' + json.dumps({'inner_s': dt, 'base_anon': base, 'inner_peak_anon': max(PEAK[0], anon())}))
""",
    "ours-job": """
import torch
from jobs.average import run_average
from jobs.spec import AverageSpec
from jobs.store import open_store
uri, refs, out_ref = sys.argv[1], sys.argv[2].split(','), sys.argv[3]
store = open_store(uri)
base = anon(); threading.Thread(target=_sampler, daemon=True).start()
t = time.perf_counter()
run_average(AverageSpec(experiment_uri=uri, task='nli', methods=('uniform',), refs=tuple(refs), output_ref=out_ref), store=store)
dt = time.perf_counter() - t
print('REPORT ' + json.dumps({'inner_s': dt, 'base_anon': base, 'inner_peak_anon': max(PEAK[0], anon())}))
""",
    "naive": """
import torch
from safetensors.torch import load_file
files = sys.argv[1].split(',')
base = anon(); threading.Thread(target=_sampler, daemon=True).start()
t = time.perf_counter()
states = [load_file(f) for f in files]
avg = {k: (torch.stack([s[k].float() for s in states]).mean(0) if states[0][k].is_floating_point() else states[0][k]) for k in states[0]}
dt = time.perf_counter() - t
print('REPORT ' + json.dumps({'inner_s': dt, 'base_anon': base, 'inner_peak_anon': max(PEAK[0], anon())}))
""",
    "seed": """
import torch
from safetensors.torch import load_file
files = sys.argv[1].split(',')
base = anon(); threading.Thread(target=_sampler, daemon=True).start()
t = time.perf_counter()
avg = None
for f in files:  # the original code: whole state dicts one after another, scaled and added in place
    sd = load_file(f)
    if avg is None:
        avg = {k: (v.float().mul_(1 / len(files)) if v.is_floating_point() else v) for k, v in sd.items()}
    else:
        for k, v in sd.items():
            if v.is_floating_point():
                avg[k].add_(v, alpha=1 / len(files))
    del sd
dt = time.perf_counter() - t
print('REPORT ' + json.dumps({'inner_s': dt, 'base_anon': base, 'inner_peak_anon': max(PEAK[0], anon())}))
""",
}


def body(name: str) -> list[str]:
    return [PY, "-c", PRELUDE + BODIES[name]]


# ------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------


def prepare(cache: Path, size: str = BASE_SIZE) -> list[str]:
    """10 committed snapshots in a LocalStore under cache/store/exp; returns their refs."""
    refs = [f"runs/{'b' * 16}/snapshots/{(i + 1) * 100:08d}" for i in range(N)]
    store_dir = cache / "store" / "exp"
    if all((store_dir / r / "manifest.json").exists() for r in refs):
        return refs
    script = textwrap.dedent(
        f"""
        import torch, sys
        from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification
        from jobs.snapshots import commit_model, save_state_dict
        from jobs.store import LocalStore
        store = LocalStore({str(store_dir)!r})
        config = XLMRobertaConfig({size})
        torch.manual_seed(0)
        model = XLMRobertaForSequenceClassification(config)
        base = {{k: v.detach().clone() for k, v in model.state_dict().items()}}
        del model
        print(sum(v.numel() for v in base.values()), 'parameters', flush=True)
        tmp = {str(cache / 'tmp.safetensors')!r}
        for i, ref in enumerate({refs!r}):
            g = torch.Generator().manual_seed(i + 1)
            state = {{k: (v + 0.01 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v) for k, v in base.items()}}
            save_state_dict(state, tmp)
            commit_model(store, ref, tmp, {{'kind': 'snapshot', 'step': (i + 1) * 100, 'dev_score': 0.5, 'head_sha256': None}})
            print('wrote', ref, flush=True)
        """
    )
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run([PY, "-c", script], check=True)
    (cache / "tmp.safetensors").unlink(missing_ok=True)
    return refs


def model_dirs(cache: Path, files: list[str]) -> list[str]:
    """mergekit wants model folders: config.json plus the weights (symlinked, no copy)."""
    from transformers import XLMRobertaConfig

    config = XLMRobertaConfig(vocab_size=250002, max_position_embeddings=514, type_vocab_size=1, num_labels=3,
                              architectures=["XLMRobertaForSequenceClassification"])
    dirs = []
    for i, f in enumerate(files):
        d = cache / "mergekit-models" / f"m{i}"
        d.mkdir(parents=True, exist_ok=True)
        config.save_pretrained(d)
        link = d / "model.safetensors"
        if not link.exists():
            link.symlink_to(f)
        dirs.append(str(d))
    return dirs


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def start_weed(data: Path) -> tuple[subprocess.Popen, dict]:
    names = ["master", "volume", "filer", "s3", "webdav", "admin", "debug"]
    ports = dict(zip(names, free_ports(len(names))))
    grpc = dict(zip(names, free_ports(len(names))))
    weed = str(Path(PY).parent / "weed")
    args = [weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0", "-bucket=bench"]
    for name in names:
        args.append(f"-{name}.port={ports[name]}")
        if name not in ("webdav", "debug"):  # s3 too: its default gRPC port is its port + 10000, past 65535 for ports above 55535
            args.append(f"-{name}.port.grpc={grpc[name]}")
    env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret"}
    proc = subprocess.Popen(args, stdout=open(data / "weed.log", "wb"), stderr=subprocess.STDOUT, env=dict(os.environ, **env))
    env.update({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{ports['s3']}", "AWS_DEFAULT_REGION": "us-east-1"})
    import boto3

    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id="bench", aws_secret_access_key="bench-secret", region_name="us-east-1")
    deadline = time.time() + 60
    while True:
        try:
            client.head_bucket(Bucket="bench")
            return proc, env
        except Exception:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("weed mini did not start")
            time.sleep(0.3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=str(REPO / ".bench-average"))
    ap.add_argument("--mergekit", default="/tmp/mergekit-venv", help="venv with mergekit 0.1.5 ('' to skip)")
    ap.add_argument("--skip-s3", action="store_true")
    ap.add_argument("--prepare-only", action="store_true")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds of cat / pass / job")
    ap.add_argument("--s3-only", action="store_true", help="only the S3 part; merges into --out")
    ap.add_argument("--out", default=str(REPO / "bench" / "average" / "results.json"))
    ap.add_argument("--tiny", action="store_true", help="a few-MB model (in --cache/tiny) to check the script runs; numbers mean nothing")
    args = ap.parse_args()
    cache = Path(args.cache) / "tiny" if args.tiny else Path(args.cache)
    sys.path.insert(0, str(REPO))
    env = dict(os.environ, XLT_VERIFIED_DIR=str(cache / "verified"), XLT_PROGRESS="0", PYTHONPATH=str(REPO))
    refs = prepare(cache, TINY_SIZE if args.tiny else BASE_SIZE)
    if args.prepare_only:
        return
    if args.s3_only:
        files = [str(cache / "store" / "exp" / r / "model.safetensors") for r in refs]
        old = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
        old.update(bench_s3(cache, refs, files, env, args.rounds))
        Path(args.out).write_text(json.dumps(old, indent=1))
        print(json.dumps(old, indent=1))
        return
    store_dir = cache / "store" / "exp"
    files = [str(store_dir / r / "model.safetensors") for r in refs]
    total = sum(os.path.getsize(f) for f in files)
    one = total / N
    results: dict = {"inputs": N, "bytes_total": total, "bytes_one": one, "cpus": os.cpu_count(), "loadavg_start": os.getloadavg()}
    out_file = str(cache / "out.safetensors")

    def warm():
        subprocess.run(["cat", *files], stdout=subprocess.DEVNULL, check=True)

    uri = f"file://{store_dir}"
    # the whole job, first time on this machine: verify (no sha256 record yet) + stream + commit
    warm()
    shutil.rmtree(cache / "verified", ignore_errors=True)
    results["ours-job-cold-verify"] = measure(body("ours-job") + [uri, ",".join(refs), "bench/avg-cold"], env)
    print("ours-job-cold-verify", results["ours-job-cold-verify"], flush=True)
    shutil.rmtree(store_dir / "bench", ignore_errors=True)
    # cat, the bare pass and the whole job, interleaved round by round: this VM's speed drifts
    # by +-20% from minute to minute, so each round's ratios compare neighbours in time
    warm()
    rounds = []
    for r in range(args.rounds):
        row = {"cat": measure(["cat", *files], env, discard=True)}
        row["ours-pass"] = measure(body("ours-pass") + [",".join(files), out_file], env)
        row["ours-job"] = measure(body("ours-job") + [uri, ",".join(refs), f"bench/avg-{r}"], env)
        shutil.rmtree(store_dir / "bench", ignore_errors=True)
        Path(out_file).unlink(missing_ok=True)
        rounds.append(row)
        print(f"round {r}: " + ", ".join(f"{k} {seconds(v):.2f} s" for k, v in row.items()), flush=True)
    results["rounds"] = rounds
    for name in ("cat", "ours-pass", "ours-job"):
        times = sorted(seconds(row[name]) for row in rounds)
        median = times[len(times) // 2]
        results[name] = dict(min(rounds, key=lambda row: abs(seconds(row[name]) - median))[name], median_s=median, min_s=times[0], max_s=times[-1])
    for name in ("ours-pass", "ours-job"):
        ratios = sorted(seconds(row[name]) / seconds(row["cat"]) for row in rounds)
        results[name]["ratio_to_cat_by_round"] = ratios
        results[name]["ratio_to_cat_median"] = ratios[len(ratios) // 2]
        print(name, "x cat per round:", " ".join(f"{x:.2f}" for x in ratios), flush=True)
    warm()
    results["naive"] = measure(body("naive") + [",".join(files)], env)
    print("naive", results["naive"], flush=True)
    warm()
    results["seed"] = measure(body("seed") + [",".join(files)], env)
    print("seed", results["seed"], flush=True)
    mk = Path(args.mergekit) / "bin" / "mergekit-yaml" if args.mergekit else None
    if mk and mk.exists():
        dirs = model_dirs(cache, files)
        cfg = cache / "mergekit.yml"
        cfg.write_text("merge_method: linear\ndtype: float32\nmodels:\n" + "".join(f"  - model: {d}\n    parameters:\n      weight: 1.0\n" for d in dirs))
        out_dir = cache / "mergekit-out"
        shutil.rmtree(out_dir, ignore_errors=True)
        warm()
        results["mergekit"] = measure([str(mk), str(cfg), str(out_dir), "--lazy-unpickle", "--allow-crimes"], dict(env, PYTHONPATH=""))
        base = subprocess.run([str(Path(args.mergekit) / "bin" / "python"), "-c", PRELUDE + "import torch, mergekit.merge, mergekit.config\nprint(anon())"], capture_output=True, text=True, check=True)
        results["mergekit"]["base_anon"] = int(base.stdout.strip().splitlines()[-1])
        print("mergekit", results["mergekit"], flush=True)
        shutil.rmtree(out_dir, ignore_errors=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    if not args.skip_s3:
        results.update(bench_s3(cache, refs, files, env, args.rounds))
    results["loadavg_end"] = os.getloadavg()
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


# the S3 contenders, each in its own process: download only (ours with the sha256 of every
# byte, as the job needs it; ours, the old s3transfer path and rclone moving the bytes only),
# and our whole average job
S3_BODIES = {
    # argv[3] "hash": every byte sha256-hashed behind the watermark, as the job needs it;
    # "bytes": the transfer alone, as rclone and s3transfer do it
    "ours-download": """
import tempfile, shutil
from pathlib import Path
from jobs.store import open_store
from jobs.store.pipelined import PipelinedDownload, Target
store = open_store('s3://bench/exp')
refs, d = sys.argv[1].split(','), tempfile.mkdtemp(dir=sys.argv[2])
base = anon(); threading.Thread(target=_sampler, daemon=True).start()
t = time.perf_counter()
targets = [Target(r + '/model.safetensors', Path(d) / r.replace('/', '_'), store.size(r + '/model.safetensors')) for r in refs]
PipelinedDownload(store, targets, hash_files=sys.argv[3] == 'hash').start().finish()
dt = time.perf_counter() - t
shutil.rmtree(d)
print('REPORT ' + json.dumps({'inner_s': dt, 'base_anon': base, 'inner_peak_anon': max(PEAK[0], anon())}))
""",
    "s3transfer-download": """
import tempfile, shutil
from concurrent.futures import ThreadPoolExecutor
from jobs.store import open_store
store = open_store('s3://bench/exp')
refs, d = sys.argv[1].split(','), tempfile.mkdtemp(dir=sys.argv[2])
base = anon(); threading.Thread(target=_sampler, daemon=True).start()
t = time.perf_counter()
# the job's path before pipelining: boto3 download_file (8 threads per file), 4 files at a time
list(ThreadPoolExecutor(4).map(lambda r: store.get_file(r + '/model.safetensors', d + '/' + r.replace('/', '_')), refs))
dt = time.perf_counter() - t
shutil.rmtree(d)
print('REPORT ' + json.dumps({'inner_s': dt, 'base_anon': base, 'inner_peak_anon': max(PEAK[0], anon())}))
""",
}
RCLONE_FLAGS = ["--transfers", "4", "--multi-thread-streams", "4"]  # rclone's defaults, the fastest of the settings tried here (10 x 4, 16 x 8, 10 x 1)


def rclone_env(env: dict, s3env: dict) -> dict:
    """An rclone remote `bench:` on the same server, from environment variables only (without
    AWS_CA_BUNDLE, which rclone's S3 client refuses on a plain-HTTP endpoint)."""
    env = {k: v for k, v in env.items() if k != "AWS_CA_BUNDLE"}
    return env | {"RCLONE_CONFIG_BENCH_TYPE": "s3", "RCLONE_CONFIG_BENCH_PROVIDER": "SeaweedFS",
            "RCLONE_CONFIG_BENCH_ENDPOINT": s3env["AWS_ENDPOINT_URL"], "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": s3env["AWS_ACCESS_KEY_ID"],
            "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": s3env["AWS_SECRET_ACCESS_KEY"], "RCLONE_CONFIG_BENCH_REGION": "us-east-1"}


def bench_s3(cache: Path, refs: list[str], files: list[str], env: dict, rounds: int = 3) -> dict:
    """Our download alone, the old download, rclone, and our whole job from S3, interleaved by round."""
    data = cache / "seaweedfs"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    proc, s3env = start_weed(data)
    out: dict = {}
    scratch = cache / "s3-scratch"
    scratch.mkdir(exist_ok=True)
    rclone = shutil.which("rclone")
    try:
        env = dict(env, **s3env)
        upload = textwrap.dedent(
            f"""
            from jobs.store import open_store
            store = open_store('s3://bench/exp')
            src = {str(cache / 'store' / 'exp')!r}
            def up(ref):
                store.put_file(ref + '/model.safetensors', src + '/' + ref + '/model.safetensors')
                store.put_bytes(ref + '/manifest.json', open(src + '/' + ref + '/manifest.json', 'rb').read())
            for ref in {refs!r}:  # one at a time: weed mini drops connections under 4 concurrent 1 GB uploads
                for attempt in range(3):
                    try:
                        up(ref)
                        break
                    except Exception:
                        if attempt == 2:
                            raise
            """
        )
        t = time.perf_counter()
        subprocess.run([PY, "-c", upload], env=env, check=True)
        out["s3-upload-inputs_s"] = time.perf_counter() - t
        total = sum(os.path.getsize(f) for f in files)
        include = [a for r in refs for a in ("--include", f"/{r}/model.safetensors")]
        by_round = []
        for r in range(rounds):
            row = {}
            row["ours-download"] = measure([PY, "-c", PRELUDE + S3_BODIES["ours-download"], ",".join(refs), str(scratch), "hash"], env)
            row["ours-transfer"] = measure([PY, "-c", PRELUDE + S3_BODIES["ours-download"], ",".join(refs), str(scratch), "bytes"], env)
            row["s3transfer-download"] = measure([PY, "-c", PRELUDE + S3_BODIES["s3transfer-download"], ",".join(refs), str(scratch)], env)
            if rclone:
                target = scratch / "rclone"
                row["rclone-download"] = measure([rclone, "copy", "bench:bench/exp", str(target), *include, *RCLONE_FLAGS],
                                                 rclone_env(env, s3env), discard=True)
                shutil.rmtree(target, ignore_errors=True)
            shutil.rmtree(cache / "verified", ignore_errors=True)  # hashed as downloaded: no record helps
            row["ours-job"] = measure(body("ours-job") + ["s3://bench/exp", ",".join(refs), f"bench/avg-{r}"], dict(env, TMPDIR=str(scratch)))
            by_round.append(row)
            print(f"s3 round {r}: " + ", ".join(f"{k} {seconds(v):.1f} s ({total / seconds(v) / 1e6:.0f} MB/s)" for k, v in row.items()), flush=True)
        out["s3-rounds"] = by_round

        def ratios(a: str, b: str) -> list[float]:
            return sorted(seconds(row[a]) / seconds(row[b]) for row in by_round if a in row and b in row)

        out["s3-summary"] = {
            "bytes": total,
            "median_s": {k: sorted(seconds(row[k]) for row in by_round)[len(by_round) // 2] for k in by_round[0]},
            "job_over_our_download": ratios("ours-job", "ours-download"),
            "job_over_rclone": ratios("ours-job", "rclone-download"),
            "our_download_throughput_over_rclone": sorted(1 / x for x in ratios("ours-download", "rclone-download")),
            "our_transfer_throughput_over_rclone": sorted(1 / x for x in ratios("ours-transfer", "rclone-download")),
            "job_over_our_transfer": ratios("ours-job", "ours-transfer"),
            "old_download_over_our_download": ratios("s3transfer-download", "ours-download"),
            "rclone_flags": RCLONE_FLAGS if rclone else "rclone not installed: skipped",
        }
        print(json.dumps(out["s3-summary"], indent=1), flush=True)
    finally:
        proc.terminate()
        proc.wait(20)
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)
    return out


if __name__ == "__main__":
    main()
