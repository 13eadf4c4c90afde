"""The Caffe importer against an independent reference.

The network is an MSRA-named ResNet-50 (conv1, bn_conv1, scale_conv1, pool1, res2a_branch1, ...,
fc1000) with tiny stage widths, defined by a prototxt as the KaimingHe/deep-residual-networks
deploy files define it.  Prototxt and weights are real protobuf messages of the caffe.proto
schema (built here with the ``protobuf`` package, not with resnetlab's reader), and the imported
model is checked against a forward pass with Caffe's semantics written below in numpy: ceil-mode
pooling with Caffe's size formula, BatchNorm with the moving-average factor and eps, Scale with
and without bias, BGR 0-255 input minus the per-pixel mean file.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("google.protobuf", reason="protobuf (the dev extra) builds the caffe.proto messages")
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format  # noqa: E402

from resnetlab import create_model  # noqa: E402
from resnetlab.cli import main  # noqa: E402
from resnetlab.data.transforms import normalize  # noqa: E402
from resnetlab.errors import WeightsError  # noqa: E402
from resnetlab.importers import import_weights  # noqa: E402
from resnetlab.weights import load_weights  # noqa: E402

# ----------------------------------------------------------------------------- caffe.proto subset
# Field numbers, types and defaults as in BVLC caffe's src/caffe/proto/caffe.proto (round_mode: 13,
# added to PoolingParameter in 2018, default CEIL); only the messages and fields used here.

_F = descriptor_pb2.FieldDescriptorProto
_TYPES = {"string": _F.TYPE_STRING, "float": _F.TYPE_FLOAT, "double": _F.TYPE_DOUBLE, "int32": _F.TYPE_INT32,
          "int64": _F.TYPE_INT64, "uint32": _F.TYPE_UINT32, "bool": _F.TYPE_BOOL}
_SCHEMA = {
    # message: [(field, number, type, label, default or "packed")]
    "BlobShape": [("dim", 1, "int64", "repeated", "packed")],
    "BlobProto": [("shape", 7, "BlobShape", "optional", None), ("data", 5, "float", "repeated", "packed"),
                  ("diff", 6, "float", "repeated", "packed"), ("double_data", 8, "double", "repeated", "packed"),
                  ("num", 1, "int32", "optional", "0"), ("channels", 2, "int32", "optional", "0"),
                  ("height", 3, "int32", "optional", "0"), ("width", 4, "int32", "optional", "0")],
    "NetParameter": [("name", 1, "string", "optional", None), ("input", 3, "string", "repeated", None),
                     ("input_dim", 4, "int32", "repeated", None), ("layer", 100, "LayerParameter", "repeated", None)],
    "LayerParameter": [("name", 1, "string", "optional", None), ("type", 2, "string", "optional", None),
                       ("bottom", 3, "string", "repeated", None), ("top", 4, "string", "repeated", None),
                       ("blobs", 7, "BlobProto", "repeated", None),
                       ("batch_norm_param", 139, "BatchNormParameter", "optional", None),
                       ("convolution_param", 106, "ConvolutionParameter", "optional", None),
                       ("eltwise_param", 110, "EltwiseParameter", "optional", None),
                       ("inner_product_param", 117, "InnerProductParameter", "optional", None),
                       ("pooling_param", 121, "PoolingParameter", "optional", None),
                       ("scale_param", 142, "ScaleParameter", "optional", None)],
    "ConvolutionParameter": [("num_output", 1, "uint32", "optional", None),
                             ("bias_term", 2, "bool", "optional", "true"), ("pad", 3, "uint32", "repeated", None),
                             ("kernel_size", 4, "uint32", "repeated", None), ("group", 5, "uint32", "optional", "1"),
                             ("stride", 6, "uint32", "repeated", None)],
    "PoolingParameter": [("pool", 1, "PoolingParameter.PoolMethod", "optional", "MAX"),
                         ("kernel_size", 2, "uint32", "optional", None), ("stride", 3, "uint32", "optional", "1"),
                         ("pad", 4, "uint32", "optional", "0"), ("global_pooling", 12, "bool", "optional", "false"),
                         ("round_mode", 13, "PoolingParameter.RoundMode", "optional", "CEIL")],
    "BatchNormParameter": [("use_global_stats", 1, "bool", "optional", None),
                           ("moving_average_fraction", 2, "float", "optional", ".999"),
                           ("eps", 3, "float", "optional", "1e-5")],
    "ScaleParameter": [("axis", 1, "int32", "optional", "1"), ("num_axes", 2, "int32", "optional", "1"),
                       ("bias_term", 4, "bool", "optional", "false")],
    "InnerProductParameter": [("num_output", 1, "uint32", "optional", None),
                              ("bias_term", 2, "bool", "optional", "true")],
    "EltwiseParameter": [("operation", 1, "EltwiseParameter.EltwiseOp", "optional", "SUM"),
                         ("coeff", 2, "float", "repeated", None)],
}
_ENUMS = {"PoolingParameter": {"PoolMethod": ["MAX", "AVE", "STOCHASTIC"], "RoundMode": ["CEIL", "FLOOR"]},
          "EltwiseParameter": {"EltwiseOp": ["PROD", "SUM", "MAX"]}}


def _caffe_pb2() -> dict[str, type]:
    """Message classes of the caffe.proto subset above, built from a descriptor at run time."""
    fdp = descriptor_pb2.FileDescriptorProto(name="caffe_subset.proto", package="caffe", syntax="proto2")
    for name, fields in _SCHEMA.items():
        msg = fdp.message_type.add(name=name)
        for enum, values in _ENUMS.get(name, {}).items():
            e = msg.enum_type.add(name=enum)
            for number, value in enumerate(values):
                e.value.add(name=value, number=number)
        for field, number, kind, label, extra in fields:
            f = msg.field.add(name=field, number=number,
                              label=_F.LABEL_REPEATED if label == "repeated" else _F.LABEL_OPTIONAL)
            if kind in _TYPES:
                f.type = _TYPES[kind]
            else:
                f.type = _F.TYPE_ENUM if "." in kind else _F.TYPE_MESSAGE
                f.type_name = f".caffe.{kind}"
            if extra == "packed":
                f.options.packed = True
            elif extra is not None:
                f.default_value = extra
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"caffe.{name}")) for name in _SCHEMA}


PB = _caffe_pb2()

# ----------------------------------------------------------------------------- the MSRA prototxt


def _layer(name: str, kind: str, bottom: str, top: str, param: str = "") -> str:
    return f'layer {{ name: "{name}" type: "{kind}" bottom: "{bottom}" top: "{top}" {param} }}\n'


def _bn_scale(suffix: str, top: str, eps: float | None = None, scale_bias: bool = True) -> str:
    bn = "use_global_stats: true" + (f" eps: {eps!r}" if eps is not None else "")
    return (_layer(f"bn{suffix}", "BatchNorm", top, top, f"batch_norm_param {{ {bn} }}")
            + _layer(f"scale{suffix}", "Scale", top, top, f"scale_param {{ bias_term: {str(scale_bias).lower()} }}"))


def _conv(name: str, bottom: str, out: int, kernel: int, stride: int = 1, pad: int = 0, bias: bool = False) -> str:
    param = f"num_output: {out} kernel_size: {kernel} stride: {stride} pad: {pad}" + ("" if bias else " bias_term: false")
    return _layer(name, "Convolution", bottom, name, f"convolution_param {{ {param} }}")


def msra_prototxt(side: int, widths=(4, 8, 16, 32), blocks=(3, 4, 6, 3), classes: int = 7,
                  pool1: str = "kernel_size: 3 stride: 2 pool: MAX") -> str:
    """A ResNet-50-deploy.prototxt (KaimingHe/deep-residual-networks) with other widths and input
    side.  pool5 is a global average pool (the original's 7x7 kernel needs a 224 input); some BN
    layers set eps, one Scale has no bias, as Caffe allows."""
    text = f'name: "ResNet-50"\ninput: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: {side}\ninput_dim: {side}\n'
    text += _conv("conv1", "data", 64, 7, stride=2, pad=3, bias=True)  # MSRA's conv1 has a bias
    text += _bn_scale("_conv1", "conv1", eps=1e-4)
    text += _layer("conv1_relu", "ReLU", "conv1", "conv1")
    text += _layer("pool1", "Pooling", "conv1", "pool1", f"pooling_param {{ {pool1} }}")
    bottom = "pool1"
    for s, (planes, n) in enumerate(zip(widths, blocks), start=2):
        for j in range(n):
            b = f"{s}{chr(ord('a') + j)}"
            stride = 2 if s > 2 and j == 0 else 1  # v1: the stride is on branch2a, the first 1x1
            if j == 0:
                text += _conv(f"res{b}_branch1", bottom, 4 * planes, 1, stride) + _bn_scale(f"{b}_branch1", f"res{b}_branch1")
                shortcut = f"res{b}_branch1"
            else:
                shortcut = bottom
            text += _conv(f"res{b}_branch2a", bottom, planes, 1, stride)
            text += _bn_scale(f"{b}_branch2a", f"res{b}_branch2a", eps=1e-3 if j == 1 else None)
            text += _layer(f"res{b}_branch2a_relu", "ReLU", f"res{b}_branch2a", f"res{b}_branch2a")
            text += _conv(f"res{b}_branch2b", f"res{b}_branch2a", planes, 3, 1, pad=1)
            text += _bn_scale(f"{b}_branch2b", f"res{b}_branch2b", scale_bias=(s, j) != (3, 1))
            text += _layer(f"res{b}_branch2b_relu", "ReLU", f"res{b}_branch2b", f"res{b}_branch2b")
            text += _conv(f"res{b}_branch2c", f"res{b}_branch2b", 4 * planes, 1)
            text += _bn_scale(f"{b}_branch2c", f"res{b}_branch2c")
            text += (f'layer {{ name: "res{b}" type: "Eltwise" bottom: "{shortcut}" bottom: "res{b}_branch2c" '
                     f'top: "res{b}" }}\n')
            text += _layer(f"res{b}_relu", "ReLU", f"res{b}", f"res{b}")
            bottom = f"res{b}"
    text += _layer("pool5", "Pooling", bottom, "pool5", "pooling_param { pool: AVE global_pooling: true }")
    text += _layer("fc1000", "InnerProduct", "pool5", "fc1000", f"inner_product_param {{ num_output: {classes} }}")
    text += _layer("prob", "Softmax", "fc1000", "prob")
    return text


def _blob(array: np.ndarray) -> object:
    blob = PB["BlobProto"]()
    blob.shape.dim.extend(array.shape)
    blob.data.extend(array.astype(np.float32).ravel().tolist())
    return blob


def caffemodel(prototxt: str, rng: np.random.Generator, zero_factor_layer: str = "bn2b_branch2a") -> object:
    """The NetParameter of ``prototxt`` with random trained blobs, as Caffe snapshots it: every layer
    with its parameters, weighted layers with their blobs (channel counts from the prototxt)."""
    net = text_format.Parse(prototxt, PB["NetParameter"]())
    channels = {"data": 3}
    for layer in net.layer:
        c = channels[layer.bottom[0]] if layer.bottom else 3
        out = c
        if layer.type == "Convolution":
            p = layer.convolution_param
            out, k = p.num_output, p.kernel_size[0]
            layer.blobs.append(_blob(rng.normal(0, math.sqrt(2 / (c * k * k)), (out, c, k, k))))
            if p.bias_term:
                layer.blobs.append(_blob(rng.normal(0, 0.5, out)))
        elif layer.type == "BatchNorm":
            # Caffe keeps running sums: the stored mean and variance are the statistics times the
            # moving-average factor (blobs[2]); a factor of 0 means mean 0 and variance 0.
            factor = 0.0 if layer.name == zero_factor_layer else rng.uniform(0.5, 20.0)
            mean, var = rng.normal(0, 0.3, c), rng.uniform(0.5, 2.0, c)
            layer.blobs.extend([_blob(mean * factor), _blob(var * factor), _blob(np.array([factor]))])
            if factor == 0:
                layer.batch_norm_param.eps = 1.0  # normalizes by sqrt(0 + 1): keeps activations in range
        elif layer.type == "Scale":
            layer.blobs.append(_blob(rng.uniform(0.5, 1.5, c)))
            if layer.scale_param.bias_term:
                layer.blobs.append(_blob(rng.normal(0, 0.2, c)))
        elif layer.type == "InnerProduct":
            out = layer.inner_product_param.num_output
            layer.blobs.extend([_blob(rng.normal(0, 0.1, (out, c))), _blob(rng.normal(0, 0.1, out))])
        for top in layer.top:
            channels[top] = out
    return net


# ----------------------------------------------------------------------------- Caffe's forward pass, in numpy


def _pooled_size(size: int, kernel: int, stride: int, pad: int, ceil: bool) -> int:
    # PoolingLayer::Reshape: rounded up by default (round_mode CEIL); with padding, the last
    # window must start inside the image.
    rounding = math.ceil if ceil else math.floor
    pooled = int(rounding((size + 2 * pad - kernel) / stride)) + 1
    if pad and (pooled - 1) * stride >= size + pad:
        pooled -= 1
    return pooled


def caffe_pool(x: np.ndarray, kernel: int, stride: int, pad: int = 0, method: str = "MAX",
               ceil: bool = True) -> np.ndarray:
    """PoolingLayer::Forward_cpu for MAX and AVE on N x C x H x W."""
    n, c, h, w = x.shape
    ph, pw = _pooled_size(h, kernel, stride, pad, ceil), _pooled_size(w, kernel, stride, pad, ceil)
    out = np.empty((n, c, ph, pw), dtype=x.dtype)
    for i in range(ph):
        for j in range(pw):
            h0, w0 = i * stride - pad, j * stride - pad
            h1, w1 = min(h0 + kernel, h + pad), min(w0 + kernel, w + pad)
            area = (h1 - h0) * (w1 - w0)  # AVE divides by the window clipped to the padded image
            h0, w0, h1, w1 = max(h0, 0), max(w0, 0), min(h1, h), min(w1, w)
            window = x[:, :, h0:h1, w0:w1]
            out[:, :, i, j] = window.max(axis=(2, 3)) if method == "MAX" else window.sum(axis=(2, 3)) / area
    return out


def _conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride: int, pad: int) -> np.ndarray:
    n, c, h, w = x.shape
    out_c, _, k, _ = weight.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    cols = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::stride, ::stride][:, :, :oh, :ow]
    y = np.einsum("nchwij,ocij->nohw", cols, weight, optimize=True)
    return y + bias[None, :, None, None] if bias is not None else y


def caffe_forward(net: object, data: np.ndarray) -> dict[str, np.ndarray]:
    """Run the NetParameter ``net`` (deploy phase) on ``data`` (N x 3 x H x W, BGR, mean
    subtracted) in float64; returns every top blob by name."""
    blobs = {net.input[0]: data.astype(np.float64)}
    for layer in net.layer:
        params = [np.array(b.data, dtype=np.float64).reshape(tuple(b.shape.dim)) for b in layer.blobs]
        x = blobs[layer.bottom[0]] if layer.bottom else None
        if layer.type == "Convolution":
            p = layer.convolution_param
            y = _conv2d(x, params[0], params[1] if p.bias_term else None,
                        p.stride[0] if p.stride else 1, p.pad[0] if p.pad else 0)
        elif layer.type == "BatchNorm":
            factor = params[2][0]
            scale = 0.0 if factor == 0 else 1.0 / factor  # BatchNormLayer::Forward_cpu
            mean, var = params[0] * scale, params[1] * scale
            eps = layer.batch_norm_param.eps
            y = (x - mean[None, :, None, None]) / np.sqrt(var + eps)[None, :, None, None]
        elif layer.type == "Scale":
            y = x * params[0][None, :, None, None]
            if layer.scale_param.bias_term:
                y = y + params[1][None, :, None, None]
        elif layer.type == "ReLU":
            y = np.maximum(x, 0)
        elif layer.type == "Pooling":
            p = layer.pooling_param
            method = PB["PoolingParameter"].PoolMethod.Name(p.pool)
            if p.global_pooling:  # one window over the whole map
                y = x.max(axis=(2, 3), keepdims=True) if method == "MAX" else x.mean(axis=(2, 3), keepdims=True)
            else:
                y = caffe_pool(x, p.kernel_size, p.stride, p.pad, method,
                               ceil=p.round_mode == PB["PoolingParameter"].CEIL)
        elif layer.type == "Eltwise":
            y = sum(blobs[b] for b in layer.bottom)  # operation SUM, coefficients 1
        elif layer.type == "InnerProduct":
            y = x.reshape(x.shape[0], -1) @ params[0].T + params[1]
        elif layer.type == "Softmax":
            e = np.exp(x - x.max(axis=1, keepdims=True))
            y = e / e.sum(axis=1, keepdims=True)
        else:
            raise AssertionError(f"layer type {layer.type} not in this reference")
        blobs[layer.top[0]] = y
    return blobs


# ----------------------------------------------------------------------------- the tests


def write_msra(folder: Path, side: int, seed: int = 0, **prototxt_args) -> tuple[object, np.ndarray, Path]:
    """``ResNet-50-model.caffemodel`` and ``ResNet_mean.binaryproto`` (1 x 3 x side x side, BGR,
    0-255) in ``folder``; returns the net, the BGR mean and the model path."""
    rng = np.random.default_rng(seed)
    net = caffemodel(msra_prototxt(side, **prototxt_args), rng)
    path = folder / "ResNet-50-model.caffemodel"
    path.write_bytes(net.SerializeToString())
    mean = rng.uniform(90, 130, (1, 3, side, side))
    (folder / "ResNet_mean.binaryproto").write_bytes(_blob(mean).SerializeToString())
    return net, mean[0], path


def _image(side: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (1, 3, side, side), dtype=np.uint8)  # RGB


def _caffe_input(rgb: np.ndarray, bgr_mean: np.ndarray) -> np.ndarray:
    return rgb[:, ::-1].astype(np.float64) - bgr_mean[None].astype(np.float32)  # BGR, 0-255, minus the mean file


def _ours(model: torch.nn.Module, meta, rgb: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return model(normalize(torch.from_numpy(rgb), meta.mean, meta.std))


def _stem(model: torch.nn.Module, meta, rgb: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return model.relu(model.bn1(model.conv1(normalize(torch.from_numpy(rgb), meta.mean, meta.std))))


def _close(ours: torch.Tensor, ref: np.ndarray) -> float:
    """max |ours - ref| relative to max |ref|."""
    return float(np.abs(ours.double().numpy() - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("side", [64, 62])
def test_imported_msra_model_matches_caffe(tmp_path, capsys, side):
    """At 64 both poolings give 16x16 from conv1's 32x32, from different windows; at 62 (conv1 31x31)
    Caffe's pool1 gives 15x15 and a padded floor pool 16x16."""
    net, bgr_mean, path = write_msra(tmp_path, side)
    out = tmp_path / "r50.safetensors"
    assert main(["import", "caffe", str(path), "-o", str(out)]) == 0
    model, meta = load_weights(out)
    assert meta.model == "resnet50"
    assert meta.kwargs == {"variant": "v1", "num_classes": 7, "widths": [4, 8, 16, 32], "stem_pool": "caffe"}
    assert "pool1 max 3x3/2 pad 0, rounded up" in meta.source and "per-pixel mean" in meta.source
    assert "stem_pool" in capsys.readouterr().out

    rgb = _image(side)
    ref = caffe_forward(net, _caffe_input(rgb, bgr_mean))
    stem = _stem(model, meta, rgb)
    assert _close(stem, ref["conv1"]) < 1e-5  # conv1 bias folded, BGR turned to RGB, mean file, 0-255
    pooled = model.maxpool(stem)
    assert pooled.shape[-1] == ref["pool1"].shape[-1] == _pooled_size(stem.shape[-1], 3, 2, 0, ceil=True)
    assert _close(pooled, ref["pool1"]) < 1e-5
    assert _close(_ours(model, meta, rgb), ref["fc1000"]) < 1e-4
    with torch.no_grad():
        probs = torch.softmax(_ours(model, meta, rgb), dim=1)
    np.testing.assert_allclose(probs.double().numpy(), ref["prob"], atol=1e-5)

    # Before the fix: the same weights in torchvision's stem pool (padding 1, floor).
    before = create_model("resnet50", **{**meta.kwargs, "stem_pool": "torch"}).eval()
    before.load_state_dict(model.state_dict())
    # Pooled-value agreement with Caffe's pooling of the same conv1 map: all of them now; before,
    # ~30 % (about 29 % on 112x112), or not even the same size.
    caffe_pooled = caffe_pool(stem.numpy(), 3, 2)
    np.testing.assert_array_equal(pooled.numpy(), caffe_pooled)
    pooled_before = before.maxpool(stem).numpy()
    if pooled_before.shape == caffe_pooled.shape:
        assert 0.2 < (pooled_before == caffe_pooled).mean() < 0.4
    else:
        assert pooled_before.shape[-1] == caffe_pooled.shape[-1] + 1
    assert _close(_ours(before, meta, rgb), ref["fc1000"]) > 1e-2


def test_model_option_keeps_the_file_architecture(tmp_path):
    """``--model`` picks the name; the stem pooling and widths read from the file still apply."""
    _, _, path = write_msra(tmp_path, 64)
    meta = import_weights("caffe", path, tmp_path / "o.safetensors", model="resnet50")
    assert meta.kwargs["stem_pool"] == "caffe" and meta.kwargs["widths"] == [4, 8, 16, 32]
    with pytest.raises(WeightsError, match="do not fit resnet101"):
        import_weights("caffe", path, tmp_path / "o.safetensors", model="resnet101")


def test_floor_pool1_is_torchs_pool_and_others_are_refused(tmp_path):
    """``round_mode: FLOOR`` with padding 1 is PyTorch's max pool, checked against the reference;
    any other pool1 is refused, naming it."""
    net, bgr_mean, path = write_msra(tmp_path, 62, pool1="kernel_size: 3 stride: 2 pad: 1 round_mode: FLOOR")
    meta = import_weights("caffe", path, tmp_path / "o.safetensors")
    assert meta.kwargs["stem_pool"] == "torch" and "rounded down" in meta.source
    model, meta = load_weights(tmp_path / "o.safetensors")
    rgb = _image(62)
    assert _close(_ours(model, meta, rgb), caffe_forward(net, _caffe_input(rgb, bgr_mean))["fc1000"]) < 1e-4
    for pool1, shown in [("kernel_size: 3 stride: 2 pad: 1", "max 3x3/2 pad 1, rounded up"),
                         ("kernel_size: 2 stride: 2", "max 2x2/2 pad 0"), ("kernel_size: 3 stride: 2 pool: AVE", "method 1")]:
        write_msra(tmp_path, 62, pool1=pool1)
        with pytest.raises(WeightsError, match=f"pool1 is {shown}"):
            import_weights("caffe", path, tmp_path / "o.safetensors")


def test_batchnorm_and_scale_semantics_refused_where_unrepresentable(tmp_path):
    path = tmp_path / "m.caffemodel"
    net = text_format.Parse(_conv("conv1", "data", 2, 1, bias=False) + _bn_scale("_conv1", "conv1", eps=1e-7),
                            PB["NetParameter"]())
    conv, bn, scale = net.layer
    conv.blobs.append(_blob(np.ones((2, 3, 1, 1))))
    bn.blobs.extend([_blob(np.zeros(2)), _blob(np.array([1e-6, 1.0])), _blob(np.array([1.0]))])
    scale.blobs.extend([_blob(np.ones(2)), _blob(np.zeros(2))])
    path.write_bytes(net.SerializeToString())
    # Caffe divides by sqrt(1e-6 + 1e-7); PyTorch's eps 1e-5 cannot give that: refused, not clamped.
    with pytest.raises(WeightsError, match="bn_conv1.*eps 1e-07.*not representable"):
        import_weights("caffe", path, tmp_path / "o.safetensors")
    del scale.blobs[1]  # bias_term: true with one blob is not a Caffe file
    bn.blobs[1].CopyFrom(_blob(np.ones(2)))
    path.write_bytes(net.SerializeToString())
    with pytest.raises(WeightsError, match="Scale layer 'scale_conv1' has bias_term: true but 1 blob$"):
        import_weights("caffe", path, tmp_path / "o.safetensors")
    del bn.blobs[2]
    path.write_bytes(net.SerializeToString())
    with pytest.raises(WeightsError, match="BatchNorm layer 'bn_conv1' holds 2 blobs"):
        import_weights("caffe", path, tmp_path / "o.safetensors")


def pool1_agreement(x: torch.Tensor) -> float:
    """Fraction of pool1 outputs on which torchvision's max pool (3x3/2, padding 1, floor) and
    Caffe's (3x3/2, no padding, ceil; the numpy reference above) agree; same output size needed."""
    ours = torch.nn.MaxPool2d(3, 2, padding=1)(x).numpy()
    caffe = caffe_pool(x.numpy(), 3, 2, 0, "MAX", ceil=True)
    assert ours.shape == caffe.shape
    return float((ours == caffe).mean())


def test_pool1_agreement_on_a_112_map():
    """The figure to match: on a 112x112 map the two poolings agree on ~29 % of the outputs (each
    3x3 window shares 2x2 of its 14-value union with the other: 4/14 = 28.6 % for distinct values)."""
    torch.manual_seed(0)
    agreement = pool1_agreement(torch.randn(1, 64, 112, 112))
    assert 0.27 < agreement < 0.31
    # resnetlab's stem_pool="caffe" is Caffe's pooling exactly
    x = torch.randn(1, 8, 112, 112)
    caffe_stem = create_model("resnet50", stem_pool="caffe").maxpool
    np.testing.assert_array_equal(caffe_stem(x).numpy(), caffe_pool(x.numpy(), 3, 2))


def test_stem_pool_is_an_architecture_option(tmp_path):
    """stem_pool flows through resnet()/plain(), the weights file's kwargs, `resnetlab info` and the
    complexity counts (at 225, conv1's 113x113 map pools to 56x56 in Caffe's way, 57x57 padded)."""
    from resnetlab.analysis.complexity import describe
    from resnetlab.weights import save_weights

    caffe, torch_pool = describe("resnet18", ["stem_pool=caffe"], 225), describe("resnet18", [], 225)
    assert caffe["kwargs"]["stem_pool"] == "caffe" and caffe["macs"] < torch_pool["macs"]
    assert any(line.startswith("maxpool") and "64x56x56" in line for line in caffe["layers"])
    assert any(line.startswith("maxpool") and "64x57x57" in line for line in torch_pool["layers"])
    model = create_model("plain18", stem_pool="caffe", widths=[8, 16, 32, 64])
    save_weights(model, tmp_path / "p.safetensors", mean=[0.5] * 3, std=[0.5] * 3)
    loaded, meta = load_weights(tmp_path / "p.safetensors")
    assert meta.kwargs["stem_pool"] == "caffe" and loaded.maxpool.ceil_mode and loaded.maxpool.padding == 0
    assert create_model("resnet18").maxpool.padding == 1  # the default is unchanged
    with pytest.raises(Exception, match="stem_pool='max' is not one of"):
        create_model("resnet18", stem_pool="max")


def test_mean_file_path_option_and_a_loud_fallback(tmp_path, capsys):
    """The mean file had to be named ResNet_mean.binaryproto and sit beside the model, and a missing one fell
    back silently to the per-channel mean."""
    _, bgr_mean, path = write_msra(tmp_path, 32)
    elsewhere = tmp_path / "means" / "mean.binaryproto"
    elsewhere.parent.mkdir()
    (tmp_path / "ResNet_mean.binaryproto").rename(elsewhere)
    assert main(["import", "caffe", str(path), "-o", str(tmp_path / "a.safetensors")]) == 0
    err = capsys.readouterr().err
    assert f"warning: no ResNet_mean.binaryproto beside {path}" in err and "--mean PATH" in err
    assert "per-channel ILSVRC mean" in load_weights(tmp_path / "a.safetensors")[1].source
    assert main(["import", "caffe", str(path), "-o", str(tmp_path / "b.safetensors"), "--mean", str(elsewhere)]) == 0
    assert "warning" not in capsys.readouterr().err
    meta = load_weights(tmp_path / "b.safetensors")[1]
    assert f"per-pixel mean {elsewhere}" in meta.source
    np.testing.assert_allclose(np.asarray(meta.mean), bgr_mean[::-1] / 255, rtol=1e-6)
    assert main(["import", "caffe", str(path), "-o", str(tmp_path / "c.safetensors"), "--mean",
                 str(tmp_path / "absent.binaryproto")]) == 2
    assert "absent.binaryproto: no such mean file" in capsys.readouterr().err
    assert main(["import", "akamaster", str(path), "-o", str(tmp_path / "d.safetensors"), "--mean", str(elsewhere)]) == 2
    assert "a mean file is for caffe imports" in capsys.readouterr().err
