#!/usr/bin/env python3
"""Writes the seed corpora fuzz/corpus/safetensors/ and fuzz/corpus/pickle/ (small, < 200 KB).

    python3 fuzz/make_seeds.py

Needs torch and safetensors. The malicious pickles are written byte by byte and never
unpickled here.
"""
import io
import json
import os
import pickle
import shutil
import struct
import zipfile
from collections import OrderedDict

import torch
from safetensors.torch import save as st_save

HERE = os.path.dirname(os.path.abspath(__file__))
ST = os.path.join(HERE, "corpus", "safetensors")
PK = os.path.join(HERE, "corpus", "pickle")


def put(folder, name, data):
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def raw_st(header, data=b"", declared=None):
    h = header.encode() if isinstance(header, str) else header
    return struct.pack("<Q", len(h) if declared is None else declared) + h + data


def tiny_state_dict():
    g = torch.Generator().manual_seed(7)
    sd = OrderedDict()
    sd["conv.weight"] = torch.randn(2, 1, 2, 2, generator=g)
    sd["conv.bias"] = torch.randn(2, generator=g).to(torch.float16)
    sd["proj.weight"] = torch.randn(2, 3, generator=g).to(torch.bfloat16)
    sd["ids"] = torch.tensor([3, -1, 2**40], dtype=torch.int64)
    sd["mask"] = torch.tensor([True, False])
    sd["scalar"] = torch.tensor(0.5)
    sd["empty"] = torch.zeros(0, 3)
    return sd


def data_pkl(obj, **kw):
    """data.pkl of a torch.save zip."""
    buf = io.BytesIO()
    torch.save(obj, buf, **kw)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
        name = next(n for n in z.namelist() if n.endswith("/data.pkl"))
        return z.read(name)


def safetensors_seeds():
    sd = tiny_state_dict()
    put(ST, "valid_mixed.safetensors", st_save(dict(sd), metadata={"format": "pt", "title": "t\u00efny \"x\"\n"}))
    put(ST, "valid_one_f32.safetensors", st_save({"w": torch.tensor([1.0, -2.0])}))
    put(ST, "valid_empty.safetensors", st_save({}))
    put(ST, "valid_scalar_f64.safetensors", st_save({"s": torch.tensor(1.5, dtype=torch.float64)}))
    put(ST, "valid_f8.safetensors", st_save({"a": torch.zeros(3, dtype=torch.float8_e4m3fn),
                                             "b": torch.zeros(2, dtype=torch.float8_e5m2)}))
    put(ST, "valid_f4_subbyte.safetensors",
        raw_st('{"q":{"dtype":"F4","shape":[4],"data_offsets":[0,2]},"r":{"dtype":"F6_E2M3","shape":[4],"data_offsets":[2,5]}}', b"\x12\x34\x00\x00\x00"))
    put(ST, "valid_escapes.safetensors",
        raw_st('{"__metadata__":{"k\\u00e9\\ud83d\\ude00":"v\\n\\t\\"\\\\\\/"},"a\\u0062":{"dtype":"U8","shape":[1,1],"data_offsets":[0,1]}}   ', b"\x01"))
    f32x2 = '{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
    put(ST, "bad_truncated_data.safetensors", raw_st(f32x2, b"\0\0\0\0"))
    put(ST, "bad_length_past_end.safetensors", raw_st("{}", declared=64))
    put(ST, "bad_overlap.safetensors",
        raw_st('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', bytes(8)))
    put(ST, "bad_shape_overflow.safetensors",
        raw_st('{"t":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,8]}}', bytes(8)))
    put(ST, "bad_duplicate.safetensors", raw_st('{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', bytes(8)))
    put(ST, "bad_metadata_number.safetensors", raw_st('{"__metadata__":{"a":1.5e3,"b":[true,false,null]}}'))
    put(ST, "bad_nesting.safetensors", raw_st("[" * 70 + "]" * 70))
    put(ST, "bad_big_numbers.safetensors", raw_st('{"t":{"dtype":"F32","shape":[99999999999999999999999,-0,1e2],"data_offsets":[-1,9223372036854775807]}}'))


def pickle_seeds():
    sd = tiny_state_dict()
    put(PK, "torch_state_dict.pkl", data_pkl(sd))
    put(PK, "torch_state_dict_p2.pkl", data_pkl({"state_dict": sd, "epoch": 3, "global_step": 2**40}, pickle_protocol=2))
    put(PK, "torch_parameter.pkl", data_pkl({"p": torch.nn.Parameter(torch.ones(2))}))
    put(PK, "torch_strided.pkl", data_pkl({"t": torch.arange(12.0).reshape(3, 4).t(), "s": torch.arange(8)[2:6]}))
    plain = {"a": [1, -1, 2**31, 2**63, -(2**70)], "b": (1.5, None, True, False), "c": b"\x00\xff" * 3,
             "d": "t\u00efny \u2603", "e": {1, 2}, "f": frozenset([3]), "g": bytearray(b"xy"),
             "h": OrderedDict([("k", 1)])}
    for proto in range(0, 6):
        put(PK, f"plain_p{proto}.pkl", pickle.dumps(plain, protocol=proto))
    t = torch.ones(2)
    t.foo = 1  # a tensor with Python attributes is saved through _rebuild_from_type_v2
    put(PK, "torch_rebuild_from_type_v2.pkl", data_pkl({"t": t}))
    put(PK, "torch_rebuild_v3_untyped.pkl", data_pkl({"f8": torch.zeros(2, dtype=torch.float8_e4m3fn),
                                                     "u16": torch.zeros(2, dtype=torch.uint16)}))
    put(PK, "torch_size_p2.pkl", data_pkl({"size": torch.Size([2, 3])}, pickle_protocol=2))
    try:
        import numpy as np
        put(PK, "numpy_scalars_p2.pkl", pickle.dumps({"s": np.int64(5), "f": np.float32(1.5), "b": np.bool_(True),
                                                      "a": np.arange(3)}, protocol=2))
    except ImportError:
        pass
    # The Lightning fixture's data.pkl (numpy scalars, callback classes as dict keys).
    fixture = os.path.join(HERE, "..", "Tests", "MumuFormatsTests", "Fixtures", "ckpt", "lightning.ckpt")
    if os.path.exists(fixture):
        with zipfile.ZipFile(fixture) as z:
            name = next(n for n in z.namelist() if n.endswith("/data.pkl"))
            put(PK, "lightning_fixture.pkl", z.read(name))
    # Malicious (written by hand, never loaded): os.system via GLOBAL + REDUCE (protocol 0),
    # builtins.eval via STACK_GLOBAL (protocol 4), and INST.
    put(PK, "malicious_global_reduce.pkl", b"cos\nsystem\n(S'echo pwned'\ntR.")
    put(PK, "malicious_stack_global.pkl",
        b"\x80\x04\x8c\x08builtins\x94\x8c\x04eval\x94\x93\x94\x8c\x0bprint('hi')\x94\x85\x94R\x94.")
    put(PK, "malicious_inst.pkl", b"(S'id'\nios\nsystem\n.")
    # Resource tricks: a memoized list appended to itself, set() of it, and a huge LONG_BINPUT index.
    put(PK, "tricky_memo.pkl",
        b"\x80\x02]q\x00h\x00ah\x00ac__builtin__\nset\nq\x01h\x00\x85Rr\xff\xff\xff\xff.")


def main():
    for d in (ST, PK):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
    safetensors_seeds()
    pickle_seeds()
    total = sum(os.path.getsize(os.path.join(d, f)) for d in (ST, PK) for f in os.listdir(d))
    print(f"{len(os.listdir(ST))} safetensors seeds, {len(os.listdir(PK))} pickle seeds, {total} bytes")


if __name__ == "__main__":
    main()
