"""How much of timm ports: one model per architecture family (every module of ``timm.list_modules()``), with
random weights (nothing downloaded), ported to Keras with verification on. Models run in worker processes, one
at a time each, with a time limit per model: a model that hangs or takes all the memory costs its worker,
which is started again, not the sweep. Prints, per family, the model tried, whether it has attention and the
outcome (ported, or the refusal's first words), the counts, the attention families' counts and refusals, and
writes benchmarks/results/coverage.json.

    .venv/bin/python benchmarks/coverage.py [--jobs 2] [--timeout 300] [--only resnet,efficientnet]

(``--only`` updates those families' rows in the results file and prints the counts over all of them.)

The model of a family is its smallest-sounding name (atto, pico, nano, tiny, small, b0, 18, ...; test models
left out), at 3x64x64 (``img_size=64`` passed where the constructor takes it). A model whose own forward does
not run at 64x64 (EfficientFormer's attention bias is fixed for a 7x7 map) is ported at the input size of its
timm configuration instead, where that is at most 256; its row records the size.

A family has attention when its built model, before porting, has a submodule that is an
``nn.MultiheadAttention`` or whose class name contains "attention", "attn" or "multihead" (any case), or
else when one forward pass of a zero input calls ``scaled_dot_product_attention``, or ``softmax`` on a tensor
of 4 or more dimensions (seen through a ``TorchFunctionMode``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import pathlib
import queue
import re
import subprocess
import sys
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
_SMALL = ["atto", "femto", "pico", "nano", "tiny", "xxs", "xs", "mini", "small", "lite", "b0", "18", "t", "s"]


def pick(family: str) -> str | None:
    import timm

    names = [n for n in timm.list_models(module=family) if not n.startswith("test_")]
    if not names:
        return None

    def score(name: str) -> tuple[int, int, str]:
        parts = re.split(r"[_.]", name)
        rank = next((i for i, k in enumerate(_SMALL) if k in parts or any(p.startswith(k) for p in parts)), 99)
        return rank, len(name), name

    return min(names, key=score)


_WORKER = r"""
import sys, json
sys.path.insert(0, {root!r})
from tests.zoo_support import import_torchvision
import_torchvision()
import timm, torch, xconv as xc
from torch.overrides import TorchFunctionMode

class Calls(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.attention = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        x = args[0] if args else None
        if name == "scaled_dot_product_attention" or (name == "softmax" and isinstance(x, torch.Tensor) and x.dim() >= 4):
            self.attention = True
        return func(*args, **(kwargs or {{}}))

def has_attention(m, side):
    for sub in m.modules():
        cls = type(sub).__name__.lower()
        if isinstance(sub, torch.nn.MultiheadAttention) or any(k in cls for k in ("attention", "attn", "multihead")):
            return True
    calls = Calls()
    try:
        with torch.no_grad(), calls:
            m(torch.zeros(1, 3, side, side))
    except Exception:  # a model that does not run: the calls made before the error count
        pass
    return calls.attention

def runs(m, side):
    try:
        with torch.no_grad():
            m(torch.zeros(1, 3, side, side))
        return True
    except Exception:
        return False

for line in sys.stdin:
    name = line.strip()
    try:
        side = (64, 64)
        try:
            m = timm.create_model(name, pretrained=False, num_classes=10, img_size=64)
        except TypeError:
            m = timm.create_model(name, pretrained=False, num_classes=10)
        m.eval()
        print(json.dumps({{"attention": has_attention(m, 64)}}), flush=True)
        own = tuple(int(d) for d in m.pretrained_cfg.get("input_size", (3, 224, 224))[-2:])
        if max(own) <= 256 and not runs(m, 64):  # (timm's own forward needs its input size: EfficientFormer's 7x7 bias)
            side = own
            m = timm.create_model(name, pretrained=False, num_classes=10).eval()
        print(json.dumps({{"input": "x".join(map(str, (3, *side)))}}), flush=True)
        km = xc.port(m, "tf", (3, *side))
        try:
            xc.set_weights(km, m.state_dict())  # strict: the state_dict keys are the ported model's
        except xc.WeightError:  # folded weight standardisation has keys of its own: from_torch's weights load
            if not any(".standardized." in k for k in xc.get_weights(km)):
                raise
            xc.set_weights(km, xc.from_torch(m, (3, *side), return_weights=True)[1])
        result = {{"ok": True}}
    except Exception as e:
        result = {{"ok": False, "error": f"{{type(e).__name__}}: {{e}}"[:300]}}
    print(json.dumps(result), flush=True)
"""


class Worker:
    """A child process porting one model per line it is sent, answering whether it has attention, then the
    outcome; started again after a timeout or a crash."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.lines: queue.Queue[str | None] = queue.Queue()

    def start(self) -> None:
        env = {"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin", "PYTHONWARNINGS": "ignore"}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER.format(root=str(ROOT))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self.lines = lines = queue.Queue()
        out = self.proc.stdout
        assert out is not None

        def read() -> None:  # (into this process's queue: a killed one's last lines go nowhere else)
            for line in out:
                if line.startswith("{"):
                    lines.put(line)
            lines.put(None)  # the process ended

        threading.Thread(target=read, daemon=True).start()

    def run(self, name: str, timeout: float) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(name + "\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        row: dict = {"attention": False}  # a model that is not built has none
        while "ok" not in row:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.proc.kill()
                self.proc = None
                return {**row, "ok": False, "error": f"timeout after {timeout:.0f} s"}
            if line is None:
                self.proc = None
                return {**row, "ok": False, "error": "the worker process died (memory?)"}
            row.update(json.loads(line))
        return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.zoo_support import import_torchvision

    import_torchvision()
    import timm

    families = [f for f in sorted(timm.list_modules()) if not args.only or f in args.only.split(",")]
    todo = [(f, n) for f, n in ((f, pick(f)) for f in families) if n is not None]
    workers: queue.Queue[Worker] = queue.Queue()
    for _ in range(args.jobs):
        workers.put(Worker())

    def one(item: tuple[str, str]) -> dict:
        worker = workers.get()
        try:
            return {"family": item[0], "model": item[1], **worker.run(item[1], args.timeout)}
        finally:
            workers.put(worker)

    rows = []
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        for row in pool.map(one, todo):
            rows.append(row)
            outcome = "ported" if row["ok"] else "refused: " + row["error"][:150]
            attention = "attention" if row["attention"] else ""
            print(f"{row['family']:28s} {row['model']:40s} {attention:9s} {outcome}", flush=True)
    ported = sum(r["ok"] for r in rows)
    print(f"\ntimm: {ported} of {len(rows)} families port ({len(families) - len(rows)} modules list no model)")
    attending = [r for r in rows if r["attention"]]
    print(f"attention: {len(attending)} families, {sum(r['ok'] for r in attending)} of them port; refused:")
    for r in attending:
        if not r["ok"]:
            print(f"  {r['family']:26s} {r['model']:40s} {r['error'][:100]}")
    out = ROOT / "benchmarks" / "results" / "coverage.json"
    if args.only and out.exists():  # a partial sweep replaces its families' rows in the full results
        fresh = {r["family"]: r for r in rows}
        kept = json.loads(out.read_text())["timm"]
        rows = [fresh.pop(r["family"], r) for r in kept] + list(fresh.values())
        print(f"all results: {sum(r['ok'] for r in rows)} of {len(rows)} families port")
    out.write_text(json.dumps({"timm": rows}, indent=1))


if __name__ == "__main__":
    main()
