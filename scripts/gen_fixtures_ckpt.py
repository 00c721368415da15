#!/usr/bin/env python3
"""Writes the .ckpt fixtures of Tests/MumuFormatsTests/Fixtures/ckpt/ (all small, < 200 KB total).

    python3 scripts/gen_fixtures_ckpt.py

Needs torch and safetensors. The malicious pickles are built byte by byte and never unpickled
here (pickletools.dis only disassembles, it executes nothing).
"""
import io
import os
import pickle
import struct
import zipfile
from collections import OrderedDict

import torch
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "MumuFormatsTests", "Fixtures", "ckpt")


def tiny_state_dict():
    g = torch.Generator().manual_seed(1234)
    sd = OrderedDict()
    sd["conv.weight"] = torch.randn(4, 3, 3, 3, generator=g)
    sd["conv.bias"] = torch.randn(4, generator=g)
    sd["norm.weight"] = torch.randn(8, generator=g).to(torch.float16)
    sd["proj.weight"] = torch.randn(6, 5, generator=g).to(torch.bfloat16)
    # Non-contiguous: a transposed view (strides (1, 7)) of a [5, 7] matrix.
    sd["proj_t.weight"] = torch.randn(5, 7, generator=g).t()
    # Non-contiguous with 2-byte elements: every other column of an f16 matrix.
    sd["half_strided"] = torch.randn(3, 8, generator=g).to(torch.float16)[:, ::2]
    # Two tensors sharing one storage: the second is a slice at element offset 4.
    full = torch.randn(16, generator=g)
    sd["base.full"] = full
    sd["base.slice"] = full[4:12]
    sd["ids"] = torch.tensor([3, -1, 2**40, 0, -(2**62)], dtype=torch.int64)
    sd["pixels"] = torch.randint(0, 256, (2, 8), generator=g, dtype=torch.uint8)
    sd["mask"] = torch.rand(3, 4, generator=g) > 0.5
    sd["scalar"] = torch.tensor(0.5)
    sd["empty"] = torch.zeros(0, 3)
    sd["param"] = torch.nn.Parameter(torch.randn(3, generator=g))
    # Non-contiguous rank 3: a permuted [2, 3, 4] tensor.
    sd["perm"] = torch.randn(3, 4, 2, generator=g).permute(2, 0, 1)
    return sd


def save(obj, name, **kw):
    path = os.path.join(OUT, name)
    torch.save(obj, path, **kw)
    return path


def write_zip(path, archive, entries, deflate=()):
    """A torch-style zip written by zipfile: stored entries unless named in `deflate`."""
    names = {name for name, _ in entries}
    entries = list(entries) + [(n, d) for n, d in (("byteorder", b"little"), ("version", b"3\n")) if n not in names]
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries:
            info = zipfile.ZipInfo(f"{archive}/{name}", date_time=(2024, 1, 1, 0, 0, 0))  # reproducible bytes
            info.compress_type = zipfile.ZIP_DEFLATED if name in deflate else zipfile.ZIP_STORED
            z.writestr(info, data)


def torch_entries(path):
    """The entries of a torch.save zip, without the archive folder."""
    with zipfile.ZipFile(path) as z:
        out = []
        for info in z.infolist():
            out.append((info.filename.split("/", 1)[1], z.read(info)))
        return out


def write_zip64(path, archive, entries):
    """A stored zip with every ZIP64 feature forced: saturated 32-bit sizes and offsets in the
    central directory with ZIP64 extra fields, a ZIP64 end record and locator."""
    out = io.BytesIO()
    cd = io.BytesIO()
    for name, data in entries:
        fname = f"{archive}/{name}".encode()
        offset = out.tell()
        crc = zipfile.crc32(data) & 0xFFFFFFFF
        local_extra = struct.pack("<HHQQ", 1, 16, len(data), len(data))
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 0, 0, 0, crc, 0xFFFFFFFF, 0xFFFFFFFF, len(fname), len(local_extra)))
        out.write(fname + local_extra + data)
        extra = struct.pack("<HHQQQ", 1, 24, len(data), len(data), offset)
        cd.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 0, 0, 0, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                             len(fname), len(extra), 0, 0, 0, 0, 0xFFFFFFFF))
        cd.write(fname + extra)
    cd_offset = out.tell()
    cd_bytes = cd.getvalue()
    out.write(cd_bytes)
    eocd64 = out.tell()
    n = len(entries)
    out.write(struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, n, n, len(cd_bytes), cd_offset))
    out.write(struct.pack("<IIQI", 0x07064B50, 0, eocd64, 1))
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0))
    with open(path, "wb") as f:
        f.write(out.getvalue())


def unicode(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def short_unicode(s):
    b = s.encode()
    return b"\x8c" + bytes([len(b)]) + b


def lightning_checkpoint():
    """What a PyTorch Lightning 1.x checkpoint holds around its state dict: a callback state keyed
    by the callback class, numpy scalars, optimizer states with tensors, hyper-parameters. The
    callback class is a stand-in registered under Lightning's module name (Lightning itself is not
    needed); pickle records only its name."""
    import sys
    import types

    import numpy as np

    names = ["pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.model_checkpoint"]
    for name in names:
        sys.modules.setdefault(name, types.ModuleType(name))
    ModelCheckpoint = type("ModelCheckpoint", (), {"__module__": names[-1]})
    sys.modules[names[-1]].ModelCheckpoint = ModelCheckpoint

    g = torch.Generator().manual_seed(7)
    sd = OrderedDict()
    sd["model.diffusion_model.out.2.weight"] = torch.randn(4, 2, 3, 3, generator=g).half()
    sd["model.diffusion_model.out.2.bias"] = torch.randn(4, generator=g).half()
    sd["first_stage_model.decoder.conv_out.bias"] = torch.randn(3, generator=g)
    return sd, {
        "epoch": 3,
        "global_step": np.int64(1234),
        "pytorch-lightning_version": "1.9.4",
        "state_dict": sd,
        "callbacks": {ModelCheckpoint: {"monitor": None, "best_model_score": torch.tensor(0.5),
                                        "best_model_path": "/ckpt/last.ckpt", "lr": np.float32(0.25),
                                        "history": np.arange(3)}},
        "optimizer_states": [{"state": {0: {"exp_avg": torch.zeros(2)}}, "param_groups": [{"lr": 1e-4, "params": [0]}]}],
        "lr_schedulers": [],
        "hparams_name": "kwargs",
        "hyper_parameters": {"base_lr": 1e-4, "betas": (0.9, 0.999)},
    }


def int_tuple(xs):
    return b"(" + b"".join(b"K" + bytes([x]) for x in xs) + b"t"


def tensor_pickle(offset, size, stride, numel):
    """{'w': _rebuild_tensor_v2(FloatStorage '0' of `numel` floats, offset, size, stride, False, OrderedDict())}"""
    storage = b"(" + unicode("storage") + b"ctorch\nFloatStorage\n" + unicode("0") + unicode("cpu") + b"K" + bytes([numel]) + b"tQ"
    call = (b"ctorch._utils\n_rebuild_tensor_v2\n(" + storage + b"K" + bytes([offset]) + int_tuple(size) + int_tuple(stride)
            + b"\x89ccollections\nOrderedDict\n)RtR")
    return b"\x80\x02}(" + unicode("w") + call + b"u."


def bomb_pickle(levels=20, width=10):
    """Dicts of dicts sharing one child by memo: width**levels entries when walked naively."""
    p = b"\x80\x02}(" + unicode("x") + b"K\x01uq\x000"
    for i in range(1, levels + 1):
        p += b"}("
        for k in range(width):
            p += unicode(chr(ord("a") + k)) + b"h" + bytes([i - 1])
        p += b"uq" + bytes([i]) + (b"0" if i < levels else b"")
    return p + b"."


def malicious_pickles():
    cmd = "echo pwned > /tmp/mumu_pwned"
    # Protocol 2: GLOBAL 'os system', the command as a 1-tuple, REDUCE, STOP.
    os_system = b"\x80\x02" + b"cos\nsystem\n" + unicode(cmd) + b"\x85" + b"R" + b"."
    # Protocol 4: a dict that starts like a state dict, then STACK_GLOBAL 'builtins eval'.
    body = (b"}\x94(" + short_unicode("weight") + b"K\x01"
            + short_unicode("payload") + short_unicode("builtins") + short_unicode("eval") + b"\x93"
            + short_unicode(f"__import__('os').system('{cmd}')") + b"\x85R" + b"u.")
    builtins_eval = b"\x80\x04\x95" + struct.pack("<Q", len(body)) + body
    # Protocol 0: INST 'posix system' with the command after a MARK.
    posix_inst = b"(V" + cmd.encode() + b"\n" + b"iposix\nsystem\n" + b"."
    return {"malicious.ckpt": os_system, "malicious_eval.ckpt": builtins_eval, "malicious_inst.ckpt": posix_inst}


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        os.remove(os.path.join(OUT, f))

    # tiny.ckpt: a Lightning-style wrapper with non-tensor siblings.
    sd = tiny_state_dict()
    tiny = save({"state_dict": sd, "global_step": 7, "epoch": 1}, "tiny.ckpt")
    save_file({k: v.detach().contiguous().clone() for k, v in sd.items()}, os.path.join(OUT, "tiny_expected.safetensors"))

    # plain*.ckpt: a bare state dict from a module (an OrderedDict with `_metadata`), in
    # protocols 1, 2 (torch's default), 4 and 5.
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    model = model.to(torch.float16)
    plain = model.state_dict()
    save(plain, "plain.ckpt")
    save(plain, "plain_p1.ckpt", pickle_protocol=1)
    save(plain, "plain_p4.ckpt", pickle_protocol=4)
    save(plain, "plain_p5.ckpt", pickle_protocol=5)
    save_file({k: v.contiguous() for k, v in plain.items()}, os.path.join(OUT, "plain_expected.safetensors"))
    # The same entries re-packed with every ZIP64 structure forced.
    write_zip64(os.path.join(OUT, "zip64.ckpt"), "zip64", torch_entries(os.path.join(OUT, "plain.ckpt")))

    # A plain pickle in protocol 0 (text opcodes), for the unpickler alone.
    with open(os.path.join(OUT, "proto0.pkl"), "wb") as f:
        f.write(pickle.dumps({"a": 1, "b": [1.5, "x\u00e9\n", None, True, False], "c": (2**70, -3), "d": b"\x00\xff"}, protocol=0))

    # Malicious pickles in otherwise valid torch-style zips.
    for name, data in malicious_pickles().items():
        archive = name.rsplit(".", 1)[0]
        write_zip(os.path.join(OUT, name), archive, [("data.pkl", data)])

    # lightning.ckpt: a Lightning-style checkpoint (numpy scalars, a callback class as a key).
    lsd, lckpt = lightning_checkpoint()
    save(lckpt, "lightning.ckpt")
    save_file({k: v.contiguous() for k, v in lsd.items()}, os.path.join(OUT, "lightning_expected.safetensors"))

    # oob.ckpt: a tensor whose view (offset 2, 4 elements) runs past its 4-element storage.
    floats = struct.pack("<4f", 1, 2, 3, 4)
    write_zip(os.path.join(OUT, "oob.ckpt"), "oob", [("data.pkl", tensor_pickle(2, [4], [1], 4)), ("data/0", floats)])
    # strided.ckpt: a hand-made strided view of [1..6] (offset 1, shape 2x2, strides 1,2): [[2, 4], [3, 5]].
    six = struct.pack("<6f", 1, 2, 3, 4, 5, 6)
    write_zip(os.path.join(OUT, "strided.ckpt"), "strided", [("data.pkl", tensor_pickle(1, [2, 2], [1, 2], 6)), ("data/0", six)])
    # bomb.ckpt: shared dicts that would expand to 10**20 names.
    write_zip(os.path.join(OUT, "bomb.ckpt"), "bomb", [("data.pkl", bomb_pickle())])

    # corrupt.ckpt: tiny.ckpt cut in the middle of its central directory.
    blob = open(tiny, "rb").read()
    eocd = blob.rfind(b"PK\x05\x06")
    eocd64 = blob.rfind(b"PK\x06\x06")
    cd_size, cd_offset = struct.unpack_from("<QQ", blob, eocd64 + 40)
    assert eocd > 0 and cd_offset + cd_size <= len(blob)
    with open(os.path.join(OUT, "corrupt.ckpt"), "wb") as f:
        f.write(blob[: cd_offset + cd_size // 2])

    # compressed.ckpt: the entries of tiny.ckpt with data.pkl deflated.
    write_zip(os.path.join(OUT, "compressed.ckpt"), "compressed", torch_entries(tiny), deflate={"data.pkl"})

    # legacy.ckpt: the pre-1.6 non-zip format.
    torch.save(OrderedDict(w=torch.ones(2)), os.path.join(OUT, "legacy.ckpt"), _use_new_zipfile_serialization=False)

    total = 0
    for f in sorted(os.listdir(OUT)):
        size = os.path.getsize(os.path.join(OUT, f))
        total += size
        print(f"{size:8d}  {f}")
    print(f"{total:8d}  total")
    assert total < 200_000


if __name__ == "__main__":
    main()
