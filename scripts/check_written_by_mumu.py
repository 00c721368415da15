#!/usr/bin/env python3
"""Check safetensors files (e.g. written by mumu) with Python's reference implementation.

    python3 scripts/check_written_by_mumu.py [--strict] [--quiet] PATH...

PATH may be a .safetensors file, a sharded index (*.safetensors.index.json: every shard it
names is checked, plus weight_map and total_size), or a directory (every *.safetensors and
*.index.json below it).

For each file:
  1. raw layout, checked here independently of the library: u64 N, header JSON object,
     no duplicate keys, __metadata__ string -> string, entries contiguous from 0 when
     sorted by begin, sizes == numel * dtype bits / 8, no trailing bytes;
  2. safe_open(framework="pt"): every tensor loads; prints name, dtype, shape; metadata;
  3. safe_open(framework="np"): every tensor of a dtype numpy has loads and equals the pt
     tensor bit for bit (BF16 / F8_* are skipped: numpy has no such dtypes);
  4. writer conventions (WARN, errors with --strict): header starts with '{', N % 8 == 0
     with 0x20 padding, each tensor's offset aligned to its element size, element size
     non-increasing along the buffer (safetensors' writer sorts by dtype, widest first,
     then name). Non-finite values in float tensors are reported as NOTE (never an error:
     test files hold them on purpose).
Exit status: 0 when every file passed, 1 otherwise.
"""

import glob
import json
import os
import struct
import sys

BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8,
        "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
        "C64": 64, "F64": 64, "I64": 64, "U64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}
NUMPY_DTYPES = {"BOOL", "U8", "I8", "I16", "U16", "F16", "I32", "U32", "F32", "F64", "I64", "U64", "C64"}


class Report:
    def __init__(self, strict, quiet):
        self.strict, self.quiet = strict, quiet
        self.errors = 0
        self.warnings = 0

    def err(self, path, msg):
        self.errors += 1
        print(f"ERROR {path}: {msg}")

    def warn(self, path, msg):
        if self.strict:
            self.err(path, msg + " (--strict)")
        else:
            self.warnings += 1
            print(f"WARN  {path}: {msg}")

    def info(self, msg):
        if not self.quiet:
            print(msg)


def _no_dups(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise ValueError(f"duplicate key {k!r} in header")
        d[k] = v
    return d


def check_layout(path, r):
    """Returns the parsed header or None."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            r.err(path, "file shorter than 8 bytes")
            return None
        n = struct.unpack("<Q", head)[0]
        if n > 100_000_000:
            r.err(path, f"header length {n} > 100,000,000")
            return None
        if 8 + n > size:
            r.err(path, f"header length {n} runs past the end of the file ({size} bytes)")
            return None
        raw = f.read(n)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        r.err(path, f"header is not UTF-8: {e}")
        return None
    try:
        header = json.loads(text, object_pairs_hook=_no_dups)
    except ValueError as e:
        r.err(path, f"header is not valid JSON: {e}")
        return None
    if not isinstance(header, dict):
        r.err(path, "header is not a JSON object")
        return None
    if not text.startswith("{"):
        r.warn(path, "header does not start with '{'")
    if n % 8 != 0:
        r.warn(path, f"header length {n} is not a multiple of 8")
    stripped = text.rstrip(" ")
    if not stripped.endswith("}"):
        r.warn(path, "header padding is not 0x20 spaces")
    meta = header.get("__metadata__")
    if meta is not None:
        if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
            r.err(path, "__metadata__ must map strings to strings")
    entries = []
    for name, e in header.items():
        if name == "__metadata__":
            continue
        if "\x00" in name:
            r.err(path, f"tensor name with a NUL byte: {name!r}")
        if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
            r.err(path, f"{name}: entry must have exactly dtype, shape, data_offsets: {e!r}")
            continue
        dt, shape, offs = e["dtype"], e["shape"], e["data_offsets"]
        if dt not in BITS:
            r.err(path, f"{name}: unknown dtype {dt!r}")
            continue
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            r.err(path, f"{name}: bad shape {shape!r}")
            continue
        if not (isinstance(offs, list) and len(offs) == 2 and all(isinstance(o, int) and o >= 0 for o in offs)):
            r.err(path, f"{name}: bad data_offsets {offs!r}")
            continue
        numel = 1
        for d in shape:
            numel *= d
        nbits = numel * BITS[dt]
        if nbits % 8:
            r.err(path, f"{name}: {numel} x {BITS[dt]} bits is not a whole number of bytes")
            continue
        if offs[1] - offs[0] != nbits // 8:
            r.err(path, f"{name}: data_offsets {offs} hold {offs[1] - offs[0]} bytes, shape {shape} {dt} needs {nbits // 8}")
        entries.append((offs[0], offs[1], name, dt))
    entries.sort()
    pos = 0
    for b, e, name, dt in entries:
        if b != pos:
            r.err(path, f"{name}: begins at {b}, expected {pos} (gap or overlap)")
        if e < b:
            r.err(path, f"{name}: end {e} < begin {b}")
        pos = max(pos, e)
        al = max(1, BITS[dt] // 8)
        if (8 + n + b) % al:
            r.warn(path, f"{name}: {dt} data at file offset {8 + n + b} is not {al}-byte aligned")
    if 8 + n + pos != size:
        r.err(path, f"file is {size} bytes, header + data = {8 + n + pos} (trailing or missing bytes)")
    # safetensors' writer orders by dtype (its enum order, widest first), then name, so the
    # element size never grows along the buffer; only that invariant is checked
    sizes = [max(1, BITS[dt] // 8) for _, _, _, dt in entries]
    if any(b > a for a, b in zip(sizes, sizes[1:])):
        r.warn(path, "tensors are not ordered by descending element size")
    return header


def check_file(path, r):
    r.info(f"== {path} ({os.path.getsize(path):,} bytes)")
    header = check_layout(path, r)
    if header is None:
        return
    nerr0 = r.errors
    try:
        import torch
        from safetensors import safe_open
    except ImportError as e:  # pragma: no cover
        r.err(path, f"cannot import safetensors/torch: {e}")
        return
    pt = {}
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata()
            r.info(f"   metadata: {json.dumps(meta, ensure_ascii=False, sort_keys=True) if meta else meta}")
            if meta != header.get("__metadata__"):
                r.err(path, "metadata from safe_open differs from the raw header")
            keys = list(f.keys())
            if sorted(keys) != sorted(k for k in header if k != "__metadata__"):
                r.err(path, "safe_open keys differ from the raw header")
            for k in keys:
                t = f.get_tensor(k)
                dt = f.get_slice(k).get_dtype()
                pt[k] = t
                if dt != header[k]["dtype"] or list(t.shape) != header[k]["shape"]:
                    r.err(path, f"{k}: pt gives {dt} {list(t.shape)}, header says {header[k]['dtype']} {header[k]['shape']}")
                extra = ""
                if t.dtype.is_floating_point and t.numel():
                    wide = t if t.dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16) \
                        else t.float()   # F8: exact in float32
                    nf = int((~torch.isfinite(wide)).sum())
                    if nf:
                        extra = f"  [{nf} non-finite]"
                        print(f"NOTE  {path}: {k}: {nf} non-finite values")
                r.info(f"   {k:60s} {dt:8s} {list(t.shape)}{extra}")
    except Exception as e:
        r.err(path, f"safe_open(pt) failed: {type(e).__name__}: {e}")
        return
    try:
        with safe_open(path, framework="np") as f:
            for k in f.keys():
                if header[k]["dtype"] not in NUMPY_DTYPES:
                    continue
                a = f.get_tensor(k)
                t = pt[k]
                b = t.numpy() if t.dtype != torch.bool else t.numpy()
                if a.shape != b.shape or a.tobytes() != b.tobytes():
                    r.err(path, f"{k}: numpy and torch loads differ")
    except Exception as e:
        r.err(path, f"safe_open(np) failed: {type(e).__name__}: {e}")
    if r.errors == nerr0:
        r.info(f"   ok: {len(pt)} tensors")


def check_index(path, r):
    r.info(f"== {path} (sharded index)")
    try:
        idx = json.load(open(path, encoding="utf-8"), object_pairs_hook=_no_dups)
    except Exception as e:
        r.err(path, f"index is not valid JSON: {e}")
        return
    wm = idx.get("weight_map")
    if not isinstance(wm, dict):
        r.err(path, "no weight_map object")
        return
    d = os.path.dirname(path)
    total = 0
    seen = {}
    for shard in sorted(set(wm.values())):
        sp = os.path.join(d, shard)
        if not os.path.exists(sp):
            r.err(path, f"shard {shard} is missing")
            continue
        check_file(sp, r)
        h = check_layout(sp, Report(False, True))
        if h is None:
            continue
        for k, e in h.items():
            if k == "__metadata__":
                continue
            if k in seen:
                r.err(path, f"{k} is in both {seen[k]} and {shard}")
            seen[k] = shard
            total += e["data_offsets"][1] - e["data_offsets"][0]
    for k, shard in wm.items():
        if seen.get(k) != shard:
            r.err(path, f"weight_map says {k} -> {shard}, found in {seen.get(k)}")
    for k in seen:
        if k not in wm:
            r.err(path, f"{k} (in {seen[k]}) is not in weight_map")
    ts = (idx.get("metadata") or {}).get("total_size")
    if ts is None:
        r.warn(path, "metadata.total_size missing")
    elif int(ts) != total:
        r.err(path, f"metadata.total_size {ts} != sum of tensor bytes {total}")
    r.info(f"   index: {len(wm)} tensors in {len(set(wm.values()))} shards, total_size {ts}")


def main(argv):
    strict = "--strict" in argv
    quiet = "--quiet" in argv
    paths = [a for a in argv if not a.startswith("--")]
    if not paths:
        print(__doc__)
        return 2
    r = Report(strict, quiet)
    for p in paths:
        if os.path.isdir(p):
            idxs = sorted(glob.glob(os.path.join(p, "**", "*.index.json"), recursive=True))
            in_idx = set()
            for ip in idxs:
                try:
                    in_idx |= {os.path.join(os.path.dirname(ip), s) for s in json.load(open(ip))["weight_map"].values()}
                except Exception:
                    pass
                check_index(ip, r)
            for fp in sorted(glob.glob(os.path.join(p, "**", "*.safetensors"), recursive=True)):
                if fp not in in_idx:
                    check_file(fp, r)
        elif p.endswith(".json"):
            check_index(p, r)
        elif os.path.exists(p):
            check_file(p, r)
        else:
            r.err(p, "no such file")
    print(f"{'FAILED' if r.errors else 'OK'}: {r.errors} errors, {r.warnings} warnings")
    return 1 if r.errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
