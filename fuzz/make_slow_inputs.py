#!/usr/bin/env python3
"""Writes hand-made inputs that the 10-minute fuzzing runs could not reach (they need inputs of
megabytes, the runs used at most 64 KB) into fuzz/slow-inputs/ (git-ignored):

    python3 fuzz/make_slow_inputs.py
    fuzz/build/pickle-fuzz -timeout=5 -rss_limit_mb=2048 fuzz/slow-inputs/pickle_*.pkl
    fuzz/build/safetensors-fuzz -rss_limit_mb=2048 fuzz/slow-inputs/st_*.safetensors

Sizes can be scaled with the MB environment variable (default 2). Nothing here is unpickled.
"""
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "slow-inputs")
MB = float(os.environ.get("MB", "2"))
N = int(MB * 1_000_000)


def binunicode(s: bytes) -> bytes:
    return b"X" + struct.pack("<I", len(s)) + s


def put(name, data):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
    print(f"{name}: {len(data)} bytes")


os.makedirs(OUT, exist_ok=True)

# 1. A long string (memo 0) used again and again as a dict key: every SETITEM hashes it whole.
half = N // 2
p = b"\x80\x02" + binunicode(b"a" * half) + b"q\x000}"
p += b"h\x00Ns" * ((N - half) // 4) + b"."
put("pickle_quadratic_dict_key.pkl", p)

# 2. numpy.core.multiarray.scalar(numpy.dtype('i8'), <long string>) again and again: every call
#    copies the whole string into a byte array before looking at its size.
p = b"\x80\x02cnumpy.core.multiarray\nscalar\nq\x010cnumpy\ndtype\n" + binunicode(b"i8") + b"\x85Rq\x020"
p += binunicode(b"a" * half) + b"q\x030"
p += b"h\x01h\x02h\x03\x86R0" * ((N - half) // 9) + b"N."
put("pickle_quadratic_numpy_scalar.pkl", p)

# 3. Memory: EMPTY_DICT + MEMOIZE, two bytes each, every one kept on the stack, in the dict
#    arena and in the memo (about 190 bytes of memory per input byte).
put("pickle_memory_dicts.pkl", b"\x80\x04" + b"}\x94" * (N // 2) + b".")

# 4. Memory: a safetensors header that is one JSON array of zeros (about 20 bytes per byte).
h = b"[" + b"0," * (N // 2 - 1) + b"0]"
put("st_memory_json_zeros.safetensors", struct.pack("<Q", len(h)) + h)
