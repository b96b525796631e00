# Ceilings and the cuDNN baseline for bench/bench.mjs, measured in the same host command:
#   python3 torch_baseline.py 8192,16384 out.json
# bf16 8192^3 matmul (TFLOP/s), device copy (GB/s, read + write), and torch SDPA (cuDNN where it
# takes the case, else flash) for B=1, HQ=64, H=4, D=128 causal forward, forward+backward, and
# decode steps (one query over T cached tokens) at batch 1 and 16. Median of CUDA-event timings.
import json
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def bench(fn, warm=2, reps=10):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        s = torch.cuda.Event(enable_timing=True)
        e = torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e))
    times.sort()
    return times[len(times) // 2]


def sdpa(q, k, v, causal):
    """Runs SDPA on cuDNN with native GQA if it accepts the case, else flash; returns (fn, label)."""
    for backend, label in ((SDPBackend.CUDNN_ATTENTION, "cudnn"), (SDPBackend.FLASH_ATTENTION, "flash")):
        def fn(backend=backend):
            with sdpa_kernel([backend]):
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
        try:
            fn()
            torch.cuda.synchronize()
            return fn, label
        except Exception:
            continue
    raise RuntimeError("no SDPA backend took the case")


def main():
    Ts = [int(t) for t in sys.argv[1].split(",")]
    out = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    out["matmulTflops"] = 2 * 8192**3 / bench(lambda: a @ b, 3, 20) / 1e9
    del a, b
    x = torch.empty(2**31, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    out["copyGBps"] = 2 * 2**31 / bench(lambda: y.copy_(x), 2, 10) / 1e6
    del x, y
    HQ, H, D = 64, 4, 128
    rows = []
    for T in Ts:
        q = torch.randn(1, HQ, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        k = torch.randn(1, H, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        v = torch.randn(1, H, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        dO = torch.randn(1, HQ, T, D, device="cuda", dtype=torch.bfloat16)
        fwd, label = sdpa(q, k, v, True)
        reps = 5 if T >= 32768 else 10
        with torch.no_grad():
            f_ms = bench(fwd, 2, reps)

        def fwd_bwd():
            o = fwd()
            o.backward(dO)

        fb_ms = bench(fwd_bwd, 2, reps)
        row = {"T": T, "fwd": f_ms, "fwdBwd": fb_ms, "kernel": label}
        del q, k, v, dO
        for B in (1, 16):
            qd = torch.randn(B, HQ, 1, D, device="cuda", dtype=torch.bfloat16)
            kd = torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16)
            vd = torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16)
            dec, dlabel = sdpa(qd, kd, vd, False)
            with torch.no_grad():
                row[f"decode{B}"] = bench(dec, 5, 50)
            row[f"decodeKernel{B}"] = dlabel
            del qd, kd, vd
        rows.append(row)
        torch.cuda.empty_cache()
    out["rows"] = rows
    with open(sys.argv[2], "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
