#!/usr/bin/env python3
"""Makes the quantized Hugging Face fixtures for strata's issue-23 tests (tests/fixtures/hf_quant/<name>/).

Each fixture is a tiny random Llama (vocab 128, hidden 128, ffn 128, 2 layers, 4 heads / 2 KV heads) whose
linear layers are stored in one quantized checkpoint format, with config.json's quantization_config as the
tools write it:
  gptq_int4_g32_sym     GPTQ v1 ("gptq"), 4-bit, group 32, symmetric (zero points stored minus one)
  gptq_int4_g64_asym    GPTQ v1, 4-bit, group 64, asymmetric
  gptq_int8_pc_v2       GPTQ v2 ("gptq_v2", zero points stored as is), 8-bit, per channel (group -1)
  gptq_int4_actorder    GPTQ v1, 4-bit, group 32, desc_act with a permuted g_idx
  awq_int4_g64          AutoAWQ GEMM, 4-bit, group 64
  fp8_block128          quant_method fp8, weight_block_size [128, 128], weight_scale_inv (DeepSeek-V3 / Qwen3 FP8)
  ct_fp8_channel        compressed-tensors float-quantized FP8, per-channel scales, static per-tensor input scale
  ct_w8a8_int8          compressed-tensors int-quantized W8A8 (int8 per channel, symmetric)
  ct_w4a16_g32          compressed-tensors pack-quantized int4, group 32, symmetric
  ct_w4a16_g64_asym     compressed-tensors pack-quantized int4, group 64, asymmetric (packed zero points)

Which code made the bytes and which dequantizes them for the reference:
  * compressed-tensors (pip install compressed-tensors; pure Python): its own compressors write every ct_*
    checkpoint (quantize, pack_to_int32, FP8 cast) and its own decompressors give the reference weights.
  * AWQ: AutoAWQ's GEMM kernels need CUDA, so the packing (qweight [in, out/8], nibble i of a word holding
    column order [0, 2, 4, 6, 1, 3, 5, 7][i], qzeros alike, fp16 scales) is written here from AutoAWQ's
    format; the reference is AutoAWQ's own dequantize_gemm (awq/utils/packing_utils.py, loaded from the
    autoawq sdist: pip download --no-deps autoawq==0.2.9, which pulls in only torch).
  * GPTQ: GPTQModel / AutoGPTQ build CUDA extensions and do not install on this CPU-only machine, so the
    packing (qweight int32 [in / (32/bits), out] packed along in, qzeros int32 [groups, out / (32/bits)]
    packed along out, fp16 scales [groups, out], int32 g_idx [in]; v1 stores zero - 1) and the reference
    dequantization (scales[g_idx] * (code - zero)) follow the GPTQ format as AutoGPTQ documents and
    implements it. With --gptqmodel-sdist every GPTQ reference is checked against GPTQModel's own
    dequantization (PackableQuantLinear.dequantize_weight and _dequantize_from_codes, their source run alone
    on the checkpoint's tensors after GPTQModel's v1 -> v2 zero-point conversion), and the 4-bit zero
    points against its unpack_gptq_qzeros (v1 stores them minus one).
  * fp8_block128: torch's float8_e4m3fn cast writes the codes; the reference is DeepSeek-V3's documented
    dequantization, weight.float() * scale_inv over 128 x 128 tiles, checked equal (with --gptqmodel-sdist)
    to GPTQModel's _dequantize_f8_reference (gptqmodel/quantization/dtype.py, its two package-relative
    imports stubbed).
All reference dequantization runs in float32 (scales upcast first): strata's transcoded blocks must give
those f32 values bit for bit. Scales are chosen f16-exact where the format is meant to map onto strata's
f16-scaled blocks.

Outputs per fixture: config.json, model.safetensors, logits.npy (transformers LlamaForCausalLM in f32 on
the reference-dequantized weights, every position of ids), ids.json (ids, greedy prompt and
continuation, FNV-1a 64 of each dequantized f32 weight, expected strata dtype per layer kind).

Run (CPU is enough): python3 tools/reference/make_hf_quant_fixtures.py --awq-sdist /tmp/autoawq-0.2.9
"""
import argparse
import importlib.util
import json
import os
import shutil

import numpy as np
import torch
import transformers
from safetensors.torch import save_file

LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
CONFIG = dict(vocab_size=128, hidden_size=128, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5,
              rope_theta=10000.0, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)


def fnv1a64(t):
    h = 0xcbf29ce484222325
    for b in t.detach().float().contiguous().numpy().tobytes():
        h ^= b
        h = (h * 0x100000001b3) & 0xffffffffffffffff
    return f"{h:016x}"


def f16_exact(x):
    return x.to(torch.float16).to(torch.float32)


def base_model(seed):
    config = transformers.LlamaConfig(**CONFIG)
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(config).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1.0 + 0.1 * torch.randn_like(p) if "norm" in name else 0.08 * torch.randn_like(p))
    return model


# ---- GPTQ (format as AutoGPTQ / GPTQModel write it) ----

def gptq_pack(w, bits, group, sym, v1, g_idx=None):
    n, k = w.shape
    maxq = (1 << bits) - 1
    gs = k if group == -1 else group
    groups = k // gs
    if g_idx is None:
        g_idx = torch.arange(k, dtype=torch.int32) // gs
    scales = torch.empty(groups, n)
    zeros = torch.empty(groups, n, dtype=torch.int32)
    codes = torch.empty(n, k, dtype=torch.int32)
    for g in range(groups):
        cols = (g_idx == g).nonzero().flatten()
        wg = w[:, cols]
        if sym:
            s = f16_exact(wg.abs().amax(1).clamp(min=1e-6) / (maxq / 2))
            z = torch.full((n,), (maxq + 1) // 2, dtype=torch.int32)
        else:
            lo, hi = wg.amin(1).clamp(max=0), wg.amax(1).clamp(min=0)
            s = f16_exact((hi - lo).clamp(min=1e-6) / maxq)
            # v1 stores zero - 1 in the field, so a zero of 0 cannot be written: keep zeros in [1, maxq]
            z = torch.round(-lo / s).clamp(1 if v1 else 0, maxq).to(torch.int32)
        scales[g], zeros[g] = s, z
        codes[:, cols] = torch.clamp(torch.round(wg / s[:, None]) + z[:, None], 0, maxq).to(torch.int32)
    pack = 32 // bits
    qweight = torch.zeros(k // pack, n, dtype=torch.int64)
    for i in range(pack):
        qweight |= codes.t()[i::pack].to(torch.int64) << (bits * i)
    stored = zeros - (1 if v1 else 0)
    qzeros = torch.zeros(groups, n // pack, dtype=torch.int64)
    for i in range(pack):
        qzeros |= (stored[:, i::pack].to(torch.int64) & maxq) << (bits * i)
    to_i32 = lambda t: t.to(torch.int64).where(t < 2**31, t - 2**32).to(torch.int32)
    tensors = {"qweight": to_i32(qweight), "qzeros": to_i32(qzeros), "scales": scales.to(torch.float16),
               "g_idx": g_idx.to(torch.int32)}
    return tensors


def gptq_dequant_zeros(t, bits, v1):
    shifts = torch.arange(0, 32, bits, dtype=torch.int32)
    qz = t["qzeros"]
    zeros = torch.bitwise_and(torch.bitwise_right_shift(qz[:, :, None], shifts[None, None, :]), (1 << bits) - 1)
    return zeros.reshape(qz.shape[0], -1) + (1 if v1 else 0)


def gptq_dequant(t, bits, v1):
    """AutoGPTQ's dequantization: unpack codes and zeros by shifts, zeros + 1 for v1, scales[g_idx] * (q - z)."""
    pack, maxq = 32 // bits, (1 << bits) - 1
    shifts = torch.arange(0, 32, bits, dtype=torch.int32)
    qw, qz = t["qweight"], t["qzeros"]
    codes = torch.bitwise_and(torch.bitwise_right_shift(qw[:, None, :], shifts[None, :, None]), maxq)
    codes = codes.reshape(-1, qw.shape[1])  # [k, n]
    zeros = torch.bitwise_and(torch.bitwise_right_shift(qz[:, :, None], shifts[None, None, :]), maxq)
    zeros = zeros.reshape(qz.shape[0], -1) + (1 if v1 else 0)  # [groups, n]
    g = t["g_idx"].long()
    scales = t["scales"].float()
    return (scales[g] * (codes - zeros[g]).float()).t().contiguous()


# ---- AWQ GEMM ----

AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]


def awq_pack(w, group):
    n, k = w.shape
    groups = k // group
    wg = w.reshape(n, groups, group)
    lo, hi = wg.amin(2).clamp(max=0), wg.amax(2).clamp(min=0)
    s = f16_exact((hi - lo).clamp(min=1e-6) / 15)  # [n, groups]
    z = torch.round(-lo / s).clamp(0, 15).to(torch.int32)
    codes = torch.clamp(torch.round(wg / s[:, :, None]) + z[:, :, None], 0, 15).to(torch.int32).reshape(n, k)
    intweight = codes.t().contiguous()  # [k, n]
    izeros = z.t().contiguous()  # [groups, n]
    def pack(m):
        out = torch.zeros(m.shape[0], m.shape[1] // 8, dtype=torch.int64)
        for col in range(m.shape[1] // 8):
            for i in range(8):
                out[:, col] |= m[:, col * 8 + AWQ_ORDER[i]].to(torch.int64) << (4 * i)
        return out.where(out < 2**31, out - 2**32).to(torch.int32)
    return {"qweight": pack(intweight), "qzeros": pack(izeros), "scales": s.t().contiguous().to(torch.float16)}


def load_gptqmodel_qzeros_unpacker(sdist):
    """GPTQModel's unpack_gptq_qzeros, taken from its source file and run alone (the module's imports need CUDA)."""
    import ast
    path = os.path.join(sdist, "gptqmodel", "nn_modules", "qlinear", "bitblas.py")
    tree = ast.parse(open(path).read())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "unpack_gptq_qzeros")
    namespace = {"torch": torch}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), path, "exec"), namespace)
    return namespace["unpack_gptq_qzeros"]


def load_gptqmodel_dequantizer(sdist):
    """GPTQModel's GPTQ dequantization (the non-planar 2/4/8-bit path), its methods' source run on a plain object."""
    import ast
    import types
    path = os.path.join(sdist, "gptqmodel", "nn_modules", "qlinear", "__init__.py")
    tree = ast.parse(open(path).read())
    wanted = {"_torch_right_shift", "_torch_shift_factor"}
    nodes = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in wanted]
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and any(
        isinstance(m, ast.FunctionDef) and m.name == "_dequantize_from_codes" for m in n.body))
    methods = [m for m in cls.body if isinstance(m, ast.FunctionDef) and m.name in ("dequantize_weight",
                                                                                     "_dequantize_from_codes")]
    namespace = {"t": torch, "torch": torch}
    exec(compile(ast.Module(body=nodes + methods, type_ignores=[]), path, "exec"), namespace)

    def dequantize(tensors, bits, v1):
        qzeros = tensors["qzeros"].clone()
        if v1:  # GPTQModel's convert_gptq_v1_to_v2_format for int32 words: one added to every field
            qzeros += {4: 0x11111111, 8: 0x01010101}[bits]
        wf = torch.tensor(list(range(0, 32, bits)), dtype=torch.int32).unsqueeze(0)
        m = types.SimpleNamespace(planar=False, bits=bits, maxq=2 ** bits - 1, pack_factor=32 // bits,
                                  dequant_dtype=torch.int8 if bits != 8 else torch.int16, qweight=tensors["qweight"],
                                  qzeros=qzeros, scales=tensors["scales"].float(), g_idx=tensors["g_idx"],
                                  in_features=tensors["qweight"].shape[0] * (32 // bits),
                                  wf_unsqueeze_zero=wf.unsqueeze(0), wf_unsqueeze_neg_one=wf.unsqueeze(-1))
        m._init_wf_unsqueeze_buffers = lambda: None
        m._dequantize_from_codes = types.MethodType(namespace["_dequantize_from_codes"], m)
        return namespace["dequantize_weight"](m).t().contiguous()
    return dequantize


def load_gptqmodel_fp8_dequantizer(sdist):
    """GPTQModel's reference FP8 dequantization, its module run with the package-relative imports stubbed."""
    path = os.path.join(sdist, "gptqmodel", "quantization", "dtype.py")
    source = open(path).read()
    source = source.replace("from ..utils.torch import HAS_NPU", "HAS_NPU = False")
    source = source.replace("from ..utils.logger import setup_logger", "setup_logger = lambda *a, **k: None")
    import sys
    import types
    module = types.ModuleType("gptqmodel_quantization_dtype")
    sys.modules[module.__name__] = module  # its dataclasses look themselves up there
    exec(compile(source, path, "exec"), module.__dict__)
    namespace = module.__dict__
    return lambda t: namespace["_dequantize_f8_reference"](t["weight"], scale_inv=t["weight_scale_inv"],
                                                           target_dtype=torch.float32)


def load_awq_packing(sdist):
    path = os.path.join(sdist, "awq", "utils", "packing_utils.py")
    spec = importlib.util.spec_from_file_location("awq_packing_utils", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---- FP8 (quant_method fp8, 128 x 128 blocks) ----

def fp8_block(w):
    n, k = w.shape
    bn, bk = (n + 127) // 128, (k + 127) // 128
    scale_inv = torch.empty(bn, bk)
    q = torch.empty(n, k, dtype=torch.float8_e4m3fn)
    for i in range(bn):
        for j in range(bk):
            tile = w[i * 128:(i + 1) * 128, j * 128:(j + 1) * 128]
            s = tile.abs().amax().clamp(min=1e-8) / 448.0
            scale_inv[i, j] = s
            q[i * 128:(i + 1) * 128, j * 128:(j + 1) * 128] = (tile / s).to(torch.float8_e4m3fn)
    return {"weight": q, "weight_scale_inv": scale_inv}


def fp8_block_dequant(t):
    q, s = t["weight"].float(), t["weight_scale_inv"].float()
    full = s.repeat_interleave(128, 0)[:q.shape[0]].repeat_interleave(128, 1)[:, :q.shape[1]]
    return q * full


# ---- compressed-tensors ----

def ct_scheme(kind):
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    if kind == "ct_fp8_channel":
        w = QuantizationArgs(num_bits=8, type="float", strategy="channel", symmetric=True)
        a = QuantizationArgs(num_bits=8, type="float", strategy="tensor", symmetric=True, dynamic=False)
        return QuantizationScheme(targets=["Linear"], weights=w, input_activations=a), "float-quantized"
    if kind == "ct_w8a8_int8":
        w = QuantizationArgs(num_bits=8, type="int", strategy="channel", symmetric=True)
        a = QuantizationArgs(num_bits=8, type="int", strategy="token", symmetric=True, dynamic=True)
        return QuantizationScheme(targets=["Linear"], weights=w, input_activations=a), "int-quantized"
    group, sym = (32, True) if kind == "ct_w4a16_g32" else (64, False)
    w = QuantizationArgs(num_bits=4, type="int", strategy="group", group_size=group, symmetric=sym)
    return QuantizationScheme(targets=["Linear"], weights=w), "pack-quantized"


def ct_qparams(w, scheme):
    args = scheme.weights
    n, k = w.shape
    if args.type == "float":
        s = (w.abs().amax(1, keepdim=True) / 448.0).to(torch.bfloat16)
        return s, None
    if args.strategy == "channel":
        s = f16_exact(w.abs().amax(1, keepdim=True) / 127.0).to(torch.bfloat16)
        # bf16 scales that are also f16 values: strata's q8_0 keeps them exactly
        s = f16_exact(s.float()).to(torch.bfloat16)
        return s, None
    g = args.group_size
    wg = w.reshape(n, k // g, g)
    if args.symmetric:
        s = (wg.abs().amax(2) / 7.5).to(torch.bfloat16)
        return s, None
    lo, hi = wg.amin(2).clamp(max=0), wg.amax(2).clamp(min=0)
    s = ((hi - lo) / 15).to(torch.bfloat16)
    z = (torch.round(-lo / s.float()) - 8).clamp(-8, 7).to(torch.int8)
    return s, z


def ct_compress(kind, w):
    from compressed_tensors.compressors import BaseCompressor
    scheme, fmt = ct_scheme(kind)
    scale, zp = ct_qparams(w, scheme)
    state = {"weight": w.to(torch.bfloat16) if scheme.weights.type == "float" else w, "weight_scale": scale}
    if zp is not None:
        state["weight_zero_point"] = zp
    compressor = BaseCompressor.load_from_registry(fmt)
    packed = compressor.compress(state, scheme)
    if scheme.input_activations is not None and not scheme.input_activations.dynamic:
        packed["input_scale"] = torch.tensor([0.05], dtype=torch.bfloat16)
    # The reference: the library's decompressor with the scales in f32.
    ref_state = dict(packed)
    ref_state["weight_scale"] = packed["weight_scale"].float()
    ref = compressor.decompress(ref_state, scheme)["weight"].float()
    return packed, ref


def ct_config(kind):
    from compressed_tensors.quantization import QuantizationConfig
    scheme, fmt = ct_scheme(kind)
    qc = QuantizationConfig(config_groups={"group_0": scheme}, format=fmt, quantization_status="compressed",
                            ignore=["lm_head"])
    d = qc.model_dump(mode="json")
    d["quant_method"] = "compressed-tensors"
    return d


FIXTURES = {
    "gptq_int4_g32_sym": dict(bits=4, group=32, sym=True, v1=True, expect="q4_0"),
    "gptq_int4_g64_asym": dict(bits=4, group=64, sym=False, v1=True, expect="q5_0"),
    "gptq_int8_pc_v2": dict(bits=8, group=-1, sym=True, v1=False, expect="q8_0"),
    "gptq_int4_actorder": dict(bits=4, group=32, sym=False, v1=True, act_order=True, expect="f32"),
    "awq_int4_g64": dict(expect="q5_0"),
    "fp8_block128": dict(expect="f8_e4m3_b128"),
    "ct_fp8_channel": dict(expect="f8_e4m3_b128"),
    "ct_w8a8_int8": dict(expect="q8_0"),
    "ct_w4a16_g32": dict(expect="q4_0"),
    "ct_w4a16_g64_asym": dict(expect="q5_0"),
}


def quant_config(name, spec):
    if name.startswith("gptq"):
        return {"quant_method": "gptq", "bits": spec["bits"], "group_size": spec["group"],
                "desc_act": bool(spec.get("act_order")), "sym": spec["sym"], "true_sequential": True,
                "checkpoint_format": "gptq" if spec["v1"] else "gptq_v2", "pack_dtype": "int32"}
    if name.startswith("awq"):
        return {"quant_method": "awq", "bits": 4, "group_size": 64, "zero_point": True, "version": "gemm",
                "modules_to_not_convert": None}
    if name == "fp8_block128":
        return {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}
    return ct_config(name)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures",
                                                      "hf_quant"))
    parser.add_argument("--awq-sdist", required=True, help="unpacked autoawq sdist (for its dequantize_gemm)")
    parser.add_argument("--gptqmodel-sdist", help="unpacked gptqmodel sdist (checks the 4-bit GPTQ zero points)")
    args = parser.parse_args()
    awq_utils = load_awq_packing(args.awq_sdist)
    gptq_qzeros = load_gptqmodel_qzeros_unpacker(args.gptqmodel_sdist) if args.gptqmodel_sdist else None
    gptq_library = load_gptqmodel_dequantizer(args.gptqmodel_sdist) if args.gptqmodel_sdist else None
    fp8_library = load_gptqmodel_fp8_dequantizer(args.gptqmodel_sdist) if args.gptqmodel_sdist else None
    for i, (name, spec) in enumerate(FIXTURES.items()):
        model = base_model(4321 + i)
        sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
        tensors, hashes = {}, {}
        gen = torch.Generator().manual_seed(77 + i)
        for layer in range(CONFIG["num_hidden_layers"]):
            for lin in LINEARS:
                prefix = f"model.layers.{layer}.{lin}"
                w = sd.pop(prefix + ".weight")
                if name.startswith("gptq"):
                    g_idx = None
                    if spec.get("act_order"):  # act order: groups in a permuted column order
                        perm = torch.randperm(w.shape[1], generator=gen)
                        g_idx = torch.empty(w.shape[1], dtype=torch.int32)
                        g_idx[perm] = (torch.arange(w.shape[1]) // spec["group"]).to(torch.int32)
                    t = gptq_pack(w, spec["bits"], spec["group"], spec["sym"], spec["v1"], g_idx)
                    ref = gptq_dequant(t, spec["bits"], spec["v1"])
                    if gptq_qzeros is not None and spec["bits"] == 4:
                        mine = gptq_dequant_zeros(t, spec["bits"], spec["v1"])
                        theirs = gptq_qzeros(t["qzeros"], 4, is_gptq_v2=not spec["v1"]).to(torch.int32)
                        assert torch.equal(mine, theirs), (name, prefix, "zero points differ from GPTQModel's")
                    if gptq_library is not None:
                        theirs = gptq_library(t, spec["bits"], spec["v1"]).float()
                        assert torch.equal(ref, theirs), (name, prefix, "differs from GPTQModel's dequantize_weight")
                elif name.startswith("awq"):
                    t = awq_pack(w, 64)
                    ref = awq_utils.dequantize_gemm(t["qweight"], t["qzeros"], t["scales"].float(), 4, 64).t()
                elif name == "fp8_block128":
                    t = fp8_block(w)
                    ref = fp8_block_dequant(t)
                    if fp8_library is not None:
                        assert torch.equal(ref, fp8_library(t)), (name, prefix, "differs from GPTQModel's FP8 dequant")
                else:
                    t, ref = ct_compress(name, w)
                ref = ref.float().contiguous()
                assert ref.shape == w.shape, (name, prefix, ref.shape)
                for k2, v in t.items():
                    tensors[f"{prefix}.{k2}"] = v.contiguous()
                sd[prefix + ".weight"] = ref
                hashes[prefix + ".weight"] = fnv1a64(ref)
        for k2, v in sd.items():
            if ".weight" in k2 and k2 != "lm_head.weight" and not any(f".{lin}." in k2 for lin in LINEARS):
                tensors[k2] = v.to(torch.float16) if "embed" in k2 else v
                sd[k2] = tensors[k2].float()
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"]  # tied: the head is the stored f16 embedding
        model.load_state_dict(sd, strict=False)
        out = os.path.join(args.out, name)
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        save_file(tensors, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
        cfg = model.config.to_dict()
        keep = ["architectures", "model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads", "head_dim", "hidden_act", "max_position_embeddings",
                "rms_norm_eps", "rope_theta", "rope_parameters", "tie_word_embeddings", "vocab_size", "bos_token_id",
                "eos_token_id", "attention_bias", "mlp_bias"]
        cfg = {k: cfg[k] for k in keep if k in cfg}
        cfg["torch_dtype"] = "float16"
        cfg["quantization_config"] = quant_config(name, spec)
        with open(os.path.join(out, "config.json"), "w") as f:
            json.dump(cfg, f, indent=1)
        rng = np.random.default_rng(500 + i)
        ids = [1] + rng.integers(3, CONFIG["vocab_size"], size=23).tolist()
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].float().numpy()
            np.save(os.path.join(out, "logits.npy"), logits.astype(np.float32))
            # A greedy prompt whose continuation never hangs on a near tie (top-2 margin >= 0.1 at every step),
            # so 8-bit activation rounding cannot flip a token.
            for attempt in range(200):
                prompt = [1] + rng.integers(3, CONFIG["vocab_size"], size=5).tolist()
                greedy, margins, cur = [], [], list(prompt)
                for _ in range(10):
                    last = model(torch.tensor([cur])).logits[0, -1]
                    top = torch.topk(last, 2)
                    greedy.append(int(top.indices[0]))
                    margins.append(float(top.values[0] - top.values[1]))
                    cur.append(greedy[-1])
                if min(margins) >= 0.1:
                    break
            assert min(margins) >= 0.1, name
        with open(os.path.join(out, "ids.json"), "w") as f:
            json.dump({"ids": ids, "greedy_prompt": prompt, "greedy_continuation": greedy, "greedy_margins": margins,
                       "expect_dtype": spec["expect"], "dequant_fnv1a64": hashes,
                       "transformers": transformers.__version__, "torch": torch.__version__}, f, indent=1)
        size = os.path.getsize(os.path.join(out, "model.safetensors"))
        print(f"{name}: {size} bytes, logits range [{logits.min():.2f}, {logits.max():.2f}], "
              f"min greedy margin {min(margins):.3f}")


if __name__ == "__main__":
    main()
