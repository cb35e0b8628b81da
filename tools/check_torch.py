"""Full-width check against PyTorch: make check-torch (needs Debian's python3-torch).

For each shipped config, the PyTorch reference ResNet (tools/fixtures/resnet.py) is built from
the config as `cbrick config` resolves it, given conditioned random weights, and run in
float64; cbrick runs the same weights and input; every output must agree to relative L2 1e-4.
The ResNet-50 and ResNeXt-50 weights are also loaded into torchvision's resnet50 and
resnext50_32x4d, whose own forward up to layer4 must agree as well, and saved by torch.save as
an mmseg-style .pth checkpoint that cbrick must load to the same outputs."""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "fixtures"))
import resnet  # noqa: E402
import st  # noqa: E402

TOLERANCE = 1e-4
CASES = [  # (config, input shape)
    ("configs/resnet/resnet18_v1b.json", (1, 3, 224, 224)),
    ("configs/resnet/resnet50_v1b.json", (1, 3, 224, 224)),
    ("configs/resnet/resnet101_v1b.json", (1, 3, 160, 160)),
    ("configs/resnet/resnet50_v1c_d8.json", (1, 3, 128, 256)),
    ("configs/resnet/resnet50_v1d.json", (1, 3, 224, 224)),
    ("configs/resnext/resnext50_32x4d.json", (1, 3, 160, 160)),
]
# Shipped configs whose weights torchvision's own model must accept and agree with.
TORCHVISION = {"configs/resnet/resnet50_v1b.json": "resnet50",
               "configs/resnext/resnext50_32x4d.json": "resnext50_32x4d"}


def cbrick(build, *args):
    cmd = [os.path.join(build, "bin", "cbrick"), "--quiet", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def backbone_cfg(build, config):
    cfg = json.loads(cbrick(build, "config", config))["model"]["backbone"]
    for key in ("pretrained", "init_cfg", "norm_eval", "with_cp", "zero_init_residual"):
        cfg.pop(key, None)
    return cfg


def rel_l2(got, want):
    return float((got.double() - want).norm() / want.norm().clamp_min(1e-30))


def run_cbrick(build, config, weights, x, tmp):
    np.save(os.path.join(tmp, "x.npy"), x.numpy())
    out = os.path.join(tmp, "out.safetensors")
    cbrick(build, "run", config, "--weights", weights, "--input", os.path.join(tmp, "x.npy"),
           "--output", out)
    got = st.load(out)
    return [got[f"feat.{i}"] for i in range(len(got))]


def check_case(build, config, shape, gen, tmp):
    model = resnet.from_cfg(backbone_cfg(build, config)).eval()
    x = torch.randn(*shape, generator=gen)
    resnet.condition(model, torch.randn(*shape, generator=gen), gen)
    weights = os.path.join(tmp, "w.safetensors")
    st.save(weights, {k: v for k, v in model.state_dict().items() if v.dim() > 0})
    with torch.no_grad():
        want = model.double()(x.double())
    got = run_cbrick(build, config, weights, x, tmp)
    errors = [rel_l2(g, w) for g, w in zip(got, want)]
    ok = len(got) == len(want) and max(errors) <= TOLERANCE
    print(f"{'ok  ' if ok else 'FAIL'} {config} {tuple(shape)}: "
          + " ".join(f"{e:.2e}" for e in errors))
    return ok, model, x, want[-1]


def check_torchvision(name, model, x, got_last):
    import torchvision

    tv = getattr(torchvision.models, name)(weights=None)
    sd = {k: v for k, v in model.float().state_dict().items()}
    missing = tv.load_state_dict(sd, strict=False)
    assert set(missing.missing_keys) == {"fc.weight", "fc.bias"}, missing
    assert not missing.unexpected_keys, missing
    tv = tv.double().eval()
    with torch.no_grad():
        h = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x.double()))))
        want = tv.layer4(tv.layer3(tv.layer2(tv.layer1(h))))
    err = rel_l2(got_last, want)
    ok = err <= TOLERANCE
    print(f"{'ok  ' if ok else 'FAIL'} torchvision {name} layer4: {err:.2e}")
    return ok


def check_pth(build, config, model, x, want_last, tmp):
    """The same weights saved by torch.save as an mmseg-style checkpoint (.pth with meta,
    an optimizer entry and `backbone.` keys) load with --prefix and give the same output."""
    sd = {f"backbone.{k}": v for k, v in model.float().state_dict().items()}
    path = os.path.join(tmp, "checkpoint.pth")
    torch.save({"meta": {"epoch": 3, "mmseg_version": "0.30.0", "lr": np.float64(0.01)},
                "state_dict": sd, "optimizer": {"state": {}, "param_groups": [{"lr": 0.01}]}},
               path)
    np.save(os.path.join(tmp, "x.npy"), x.numpy())
    out = os.path.join(tmp, "pth_out.safetensors")
    cbrick(build, "run", config, "--weights", path, "--prefix", "backbone",
           "--input", os.path.join(tmp, "x.npy"), "--output", out)
    got = st.load(out)
    err = rel_l2(got[f"feat.{len(got) - 1}"], want_last)
    ok = err <= TOLERANCE
    print(f"{'ok  ' if ok else 'FAIL'} {config} from a torch.save .pth checkpoint: {err:.2e}")
    return ok


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    gen = torch.Generator().manual_seed(0)
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for config, shape in CASES:
            ok, model, x, want_last = check_case(build, config, shape, gen, tmp)
            failures += not ok
            if config in TORCHVISION:
                got = run_cbrick(build, config, os.path.join(tmp, "w.safetensors"), x, tmp)
                failures += not check_torchvision(TORCHVISION[config], model, x, got[-1])
                failures += not check_pth(build, config, model, x, want_last, tmp)
    print(f"{len(CASES) + 2 * len(TORCHVISION) - failures} passed, {failures} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
