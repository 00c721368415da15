#!/usr/bin/env python3
"""Generate safetensors ground-truth fixtures for the Swift reader/writer tests.

    python3 scripts/gen_fixtures_safetensors.py

Writes (deterministic: re-running gives the same tensors and headers; safetensors writes
__metadata__ keys in HashMap order, so an existing file that differs only in that order is
kept as it is):
  Tests/MumuFormatsTests/Fixtures/safetensors/python_written.safetensors
      written by safetensors.torch.save_file with __metadata__ {"format":"pt","note":"written by python"}:
      F32 [2,3], F16 [4], BF16 [3,2], F64 [2], F8_E4M3 [5], F8_E5M2 [5], I64 [3], I32 [2,2],
      I16 [2], I8 [4], U8 [3], BOOL [4], rank-0 F32, zero-size F32 [0,4], F16 [17,13].
  Tests/MumuFormatsTests/Fixtures/safetensors/python_written.json
      {"file_bytes", "header_len" (the u64 N), "data_start" (8+N), "metadata",
       "value_encoding", "tensors": {name: {"dtype", "shape", "data_offsets", "raw_hex",
       "values"}}}. "values" is the flat row-major list as STRINGS: integers and bools (0/1)
       in decimal (exact for all of I64), floats as the shortest decimal that round-trips
       the float64 value (Python repr) - for F16/BF16/F8 the decoded float32 value, which
       is exact in float64 - and "nan", "inf", "-inf" for non-finite values.
       raw_hex is the tensor's little-endian bytes as stored.
  Tests/MumuFormatsTests/Fixtures/safetensors/sharded/
      model-00001-of-00002.safetensors, model-00002-of-00002.safetensors,
      model.safetensors.index.json, written by huggingface_hub.save_torch_state_dict
      (the convention transformers/diffusers use): 6 small tensors over two shards.
  Tests/MumuFormatsTests/Fixtures/dtypes/f8_reference.safetensors
      e4m3_decoded F32[256]  = uint8 0..255 viewed as torch.float8_e4m3fn, .float()
      e5m2_decoded F32[256]  = same for torch.float8_e5m2
      probe        F32[N]    = every finite representable value of both formats, every
                               midpoint between consecutive ones and its float32 neighbours
                               (nextafter up and down), values around the maxima (448, 464,
                               480, 57344, 61440, 65536 and neighbours), the subnormal
                               ranges, +-0, +-inf, NaN, and seeded random values over
                               magnitudes 2^-24 .. 2^20
      probe_e4m3   U8[N]     = probe.to(torch.float8_e4m3fn).view(torch.uint8)
      probe_e5m2   U8[N]     = probe.to(torch.float8_e5m2).view(torch.uint8)
      __metadata__ records the torch version and the observed rounding behaviour.
      Observed with torch 2.15 (CPU): round to nearest, ties to even; float8_e4m3fn
      SATURATES: every value beyond the largest finite (448), +-inf included, becomes
      +-448 (0x7E/0xFE); NaN -> 0x7F (0xFF with the sign bit set). float8_e5m2 does
      not saturate: values >= 61440 (the midpoint 57344..65536, ties to even) -> inf
      (0x7C/0xFC), NaN -> 0x7F-ish quiet NaN.
"""

import json
import math
import os
import struct
import sys

import numpy as np
import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FIX = os.path.join(ROOT, "Tests", "MumuFormatsTests", "Fixtures")
ST_DIR = os.path.join(FIX, "safetensors")
DT_DIR = os.path.join(FIX, "dtypes")

DTYPE_NAME = {
    torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
    torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2", torch.int64: "I64",
    torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL",
}


def fstr(x):
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return repr(x)


def values_of(t):
    if t.dtype == torch.bool:
        return [str(int(v)) for v in t.flatten().tolist()]
    if t.dtype.is_floating_point:
        wide = t.double() if t.dtype == torch.float64 else t.float()
        return [fstr(v) for v in wide.flatten().tolist()]
    return [str(int(v)) for v in t.flatten().tolist()]


def raw_bytes(t):
    t = t.contiguous()
    if t.numel() == 0:
        return b""
    return t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.dtype != torch.bool \
        else t.to(torch.uint8).numpy().tobytes()


def read_header(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    return data, n, json.loads(data[8:8 + n])


def install_if_changed(tmp, path):
    """Move tmp over path unless path already holds the same file up to the order of keys in
    the JSON header (same parsed header, same header length, same tensor bytes)."""
    if os.path.exists(path):
        new, nn, hn = read_header(tmp)
        old, no, ho = read_header(path)
        if hn == ho and nn == no and new[8 + nn:] == old[8 + no:]:
            os.remove(tmp)
            return path
    os.replace(tmp, path)
    return path


def stable_save(tensors, path, metadata=None):
    """save_file, but keep an existing file whose parsed header and tensor bytes are the
    same: safetensors serialises __metadata__ from a Rust HashMap, so its key order (only
    that) can change between runs; this avoids spurious diffs in git."""
    tmp = path + ".tmp"
    save_file(tensors, tmp, metadata=metadata)
    return install_if_changed(tmp, path)


def python_written():
    g = torch.Generator().manual_seed(20240601)
    T = {}
    T["f32"] = torch.randn(2, 3, generator=g)
    T["f16"] = torch.tensor([0.5, -1.25, 65504.0, 5.9604644775390625e-08], dtype=torch.float16)  # max, min subnormal
    T["bf16"] = torch.tensor([[1.0, -0.0], [3.140625, -1.0e30], [float("inf"), 1.0e-40]], dtype=torch.float32).to(torch.bfloat16)
    T["f64"] = torch.tensor([math.pi, -1.0e300], dtype=torch.float64)
    T["f8_e4m3"] = torch.tensor([0.0, 1.5, -448.0, 2.0 ** -9, float("nan")]).to(torch.float8_e4m3fn)
    T["f8_e5m2"] = torch.tensor([-0.0, 0.75, 57344.0, 2.0 ** -16, float("-inf")]).to(torch.float8_e5m2)
    T["i64"] = torch.tensor([-(2 ** 63), 2 ** 53 + 1, 42], dtype=torch.int64)
    T["i32"] = torch.tensor([[-(2 ** 31), 2 ** 31 - 1], [7, -7]], dtype=torch.int32)
    T["i16"] = torch.tensor([-32768, 32767], dtype=torch.int16)
    T["i8"] = torch.tensor([-128, -1, 0, 127], dtype=torch.int8)
    T["u8"] = torch.tensor([0, 128, 255], dtype=torch.uint8)
    T["bool"] = torch.tensor([True, False, True, True])
    T["scalar_f32"] = torch.tensor(-2.75, dtype=torch.float32)
    T["empty_f32"] = torch.zeros(0, 4, dtype=torch.float32)
    T["f16_big"] = (torch.randn(17, 13, generator=g) * 4).to(torch.float16)
    T["layer.0.weight"] = torch.randn(3, 2, generator=g)   # a dotted, model-like name

    path = os.path.join(ST_DIR, "python_written.safetensors")
    meta = {"format": "pt", "note": "written by python"}
    stable_save(T, path, metadata=meta)

    data, n, header = read_header(path)
    out = {
        "file": "python_written.safetensors",
        "writer": f"safetensors {__import__('safetensors').__version__} (safetensors.torch.save_file), torch {torch.__version__}",
        "file_bytes": len(data),
        "header_len": n,
        "data_start": 8 + n,
        "metadata": header.get("__metadata__"),
        "value_encoding": "strings: decimal integers (bool 0/1); floats = shortest round-trip decimal of the "
                          "float64 value (F16/BF16/F8 decoded to float32 first); nan, inf, -inf",
        "tensors": {},
    }
    for name in sorted(T):
        t = T[name]
        h = header[name]
        assert h["dtype"] == DTYPE_NAME[t.dtype], (name, h["dtype"])
        assert h["shape"] == list(t.shape)
        b0, b1 = h["data_offsets"]
        rb = raw_bytes(t)
        assert data[8 + n + b0: 8 + n + b1] == rb, name
        out["tensors"][name] = {"dtype": h["dtype"], "shape": h["shape"], "data_offsets": [b0, b1],
                                "raw_hex": rb.hex(), "values": values_of(t)}
    with open(os.path.join(ST_DIR, "python_written.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    return path


def sharded():
    from huggingface_hub import save_torch_state_dict
    d = os.path.join(ST_DIR, "sharded")
    os.makedirs(d, exist_ok=True)
    for fn in os.listdir(d):
        os.remove(os.path.join(d, fn))
    g = torch.Generator().manual_seed(7)
    sd = {
        "encoder.embed.weight": torch.randn(8, 4, generator=g),
        "encoder.layers.0.weight": torch.randn(4, 4, generator=g),
        "encoder.layers.0.bias": torch.randn(4, generator=g),
        "encoder.layers.1.weight": torch.randn(4, 4, generator=g).to(torch.float16),
        "encoder.layers.1.bias": torch.randn(4, generator=g).to(torch.float16),
        "head.weight": torch.randn(2, 4, generator=g).to(torch.bfloat16),
    }
    save_torch_state_dict(sd, d, max_shard_size=200)   # bytes -> two shards
    files = sorted(os.listdir(d))
    assert files == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                     "model.safetensors.index.json"], files
    idx = json.load(open(os.path.join(d, "model.safetensors.index.json")))
    total = sum(t.numel() * t.element_size() for t in sd.values())
    assert idx["metadata"]["total_size"] == total, (idx["metadata"], total)
    assert sorted(idx["weight_map"]) == sorted(sd)
    assert set(idx["weight_map"].values()) == set(files[:2])
    return d, idx


def rne_reference(x, table, saturate):
    """Bit patterns of x (float32 array) rounded to nearest, ties to even mantissa, over the
    finite values of an 8-bit float `table` (decoded values of bit patterns 0..255).
    NaN -> 0x7F | sign. Overflow: saturate to the largest finite, or inf when the format
    has one (values at or beyond the midpoint between max and the next power step)."""
    bits = np.arange(256)
    fin = np.isfinite(table)
    out = np.zeros(len(x), dtype=np.uint8)
    pos_bits = [int(b) for b in bits if b < 128 and fin[b]]          # 0x00.. positive finite
    pos_vals = np.array([table[b] for b in pos_bits], dtype=np.float64)
    order = np.argsort(pos_vals, kind="stable")
    pos_bits = [pos_bits[i] for i in order]
    pos_vals = pos_vals[order]
    vmax = pos_vals[-1]
    step = pos_vals[-1] - pos_vals[-2]
    inf_bits = [int(b) for b in bits if b < 128 and np.isinf(table[b])]
    for i, v in enumerate(np.asarray(x, dtype=np.float64)):
        sign = 0x80 if np.signbit(v) else 0
        if np.isnan(v):
            out[i] = 0x7F | sign
            continue
        a = abs(v)
        if a >= vmax + step / 2 or np.isinf(a):
            if saturate or not inf_bits:
                out[i] = pos_bits[-1] | sign
            else:
                out[i] = inf_bits[0] | sign
            continue
        j = int(np.searchsorted(pos_vals, a))
        if j < len(pos_vals) and pos_vals[j] == a:
            b = pos_bits[j]
        else:
            lo, hi = j - 1, j
            if hi >= len(pos_vals):
                b = pos_bits[lo]
            else:
                dl, dh = a - pos_vals[lo], pos_vals[hi] - a
                if dl < dh:
                    b = pos_bits[lo]
                elif dh < dl:
                    b = pos_bits[hi]
                else:
                    b = pos_bits[lo] if pos_bits[lo] % 2 == 0 else pos_bits[hi]
        out[i] = b | sign
    return out


def f8_reference():
    bits = torch.arange(256, dtype=torch.int32).to(torch.uint8)
    e4 = bits.view(torch.float8_e4m3fn).float()
    e5 = bits.view(torch.float8_e5m2).float()

    vals = set()

    def add(x):
        vals.add(float(np.float32(x)))

    def neighbours(x):
        x32 = np.float32(x)
        with np.errstate(over="ignore"):   # nextafter(FLT_MAX, inf) = inf is fine
            for v in (x32, np.nextafter(x32, np.float32(np.inf)), np.nextafter(x32, np.float32(-np.inf))):
                if np.isfinite(v):
                    add(v)

    for table in (e4, e5):
        fin = sorted({float(v) for v in table.tolist() if math.isfinite(v)})
        for v in fin:
            neighbours(v)
        for a, b in zip(fin, fin[1:]):
            mid = np.float32((np.float64(a) + np.float64(b)) / 2)
            assert float(mid) == (a + b) / 2  # exact in float32
            neighbours(mid)
    for v in (448, 464, 480, 496, 512, 57344, 61440, 65536, 1e6, 3.0e38, np.finfo(np.float32).max):
        neighbours(v)
        neighbours(-v)
    # subnormal ranges: e4m3 min subnormal 2^-9, min normal 2^-6; e5m2 2^-16, 2^-14
    for e in range(-26, -4):
        for m in (1.0, 1.25, 1.5, 1.75):
            neighbours(m * 2.0 ** e)
            neighbours(-m * 2.0 ** e)
    neighbours(np.finfo(np.float32).tiny)           # smallest normal float32
    add(np.float32(1e-45))                           # smallest subnormal float32
    vals.discard(0.0)
    rng = np.random.default_rng(12345)
    mags = 2.0 ** rng.uniform(-24, 20, size=1200)
    signs = np.where(rng.random(1200) < 0.5, -1.0, 1.0)
    rand = (mags * signs).astype(np.float32)

    finite = np.array(sorted(vals), dtype=np.float32)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan], dtype=np.float32)
    probe = np.concatenate([special, finite, rand]).astype(np.float32)
    assert np.signbit(probe[5]) and np.isnan(probe[5])   # a negative NaN is in the probe
    probe_t = torch.from_numpy(probe.copy())
    p4 = probe_t.to(torch.float8_e4m3fn).view(torch.uint8)
    p5 = probe_t.to(torch.float8_e5m2).view(torch.uint8)
    # independent check: torch == round-to-nearest-even over the format's finite values
    for name, table, got, saturate in (("e4m3", e4, p4, True), ("e5m2", e5, p5, False)):
        ref = rne_reference(probe, table.numpy(), saturate)
        bad = np.nonzero(ref != got.numpy())[0]
        print(f"    {name}: torch vs independent RNE reference ({'saturating' if saturate else 'overflow to inf'}): "
              f"{len(bad)} disagreements of {len(probe)}")
        assert len(bad) == 0, [(float(probe[i]), int(ref[i]), int(got[i])) for i in bad[:10]]

    # record what this torch does at the edges
    def cvt(x, dt):
        return int(torch.tensor([x], dtype=torch.float32).to(dt).view(torch.uint8).item())
    obs = {
        "e4m3_448": cvt(448.0, torch.float8_e4m3fn), "e4m3_464": cvt(464.0, torch.float8_e4m3fn),
        "e4m3_1e9": cvt(1e9, torch.float8_e4m3fn), "e4m3_inf": cvt(float("inf"), torch.float8_e4m3fn),
        "e4m3_nan": cvt(float("nan"), torch.float8_e4m3fn),
        "e5m2_57344": cvt(57344.0, torch.float8_e5m2), "e5m2_61439": cvt(61439.0, torch.float8_e5m2),
        "e5m2_61440": cvt(61440.0, torch.float8_e5m2), "e5m2_inf": cvt(float("inf"), torch.float8_e5m2),
        "e5m2_nan": cvt(float("nan"), torch.float8_e5m2),
    }
    meta = {
        "torch": torch.__version__,
        "probe_count": str(len(probe)),
        "observed": json.dumps(obs, sort_keys=True),
        "note": "probe_e4m3/probe_e5m2 = torch probe.to(float8).view(uint8); e4m3fn saturates "
                "overflow and +-inf to +-448, e5m2 overflows to inf; round to nearest even",
    }
    path = os.path.join(DT_DIR, "f8_reference.safetensors")
    stable_save({"e4m3_decoded": e4, "e5m2_decoded": e5, "probe": probe_t,
               "probe_e4m3": p4.contiguous(), "probe_e5m2": p5.contiguous()}, path, metadata=meta)
    return path, len(probe), obs


def main():
    os.makedirs(ST_DIR, exist_ok=True)
    os.makedirs(DT_DIR, exist_ok=True)
    p = python_written()
    data, n, header = read_header(p)
    print(f"  {os.path.relpath(p, ROOT)}: {len(data)} bytes, header N={n}, {len(header) - 1} tensors")
    jp = os.path.join(ST_DIR, "python_written.json")
    print(f"  {os.path.relpath(jp, ROOT)}: {os.path.getsize(jp)} bytes")
    d, idx = sharded()
    for fn in sorted(os.listdir(d)):
        print(f"  {os.path.relpath(os.path.join(d, fn), ROOT)}: {os.path.getsize(os.path.join(d, fn))} bytes")
    print(f"    index: total_size {idx['metadata']['total_size']}, weight_map {json.dumps(idx['weight_map'])}")
    fp, nprobe, obs = f8_reference()
    print(f"  {os.path.relpath(fp, ROOT)}: {os.path.getsize(fp)} bytes, probe N={nprobe}")
    print(f"    observed torch conversions: {obs}")
    assert os.path.getsize(fp) < 100_000
    return 0


if __name__ == "__main__":
    sys.exit(main())
