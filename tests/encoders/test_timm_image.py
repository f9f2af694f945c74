import numpy as np
import pytest
from PIL import Image

from fewshot.encoders.timm_image import load_timm
from fewshot.errors import ImageReadError


@pytest.fixture
def images(tmp_path, rng):
    arrays = [rng.integers(0, 255, (105, 105, 3), dtype=np.uint8) for _ in range(3)]
    paths = []
    for i, a in enumerate(arrays):
        p = tmp_path / f"im{i}.png"
        Image.fromarray(a).save(p)
        paths.append(str(p))
    return arrays, paths


def test_effnet_lite0_features(effnet, images):
    arrays, paths = images
    v = effnet.encode_images(paths)
    assert v.shape == (3, 1280) and v.dtype == np.float32 and effnet.dim == 1280
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    from_pil = effnet.encode([Image.fromarray(a) for a in arrays])
    np.testing.assert_allclose(v, from_pil, atol=1e-5)
    assert effnet.describe()["preprocess"]["mean"] == (0.5, 0.5, 0.5)


def test_effnet_weights_are_the_imagenet_ones(effnet):
    # the packaged weights carry BatchNorm statistics; random init would have running_var == 1 everywhere
    bn = effnet.model.bn1
    assert not np.allclose(bn.running_var.cpu().numpy(), 1.0)


def test_unreadable_images_are_typed(effnet, tmp_path, images):
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    truncated = tmp_path / "trunc.png"
    truncated.write_bytes(open(images[1][0], "rb").read()[:200])
    for bad in (str(text), str(truncated), str(tmp_path / "missing.png"), 42):
        with pytest.raises(ImageReadError):
            effnet.encode_images([bad])


def test_timm_local_checkpoint(tmp_path, images):
    import timm
    import torch

    model = timm.create_model("resnet18", pretrained=False, num_classes=0)
    torch.save(model.state_dict(), tmp_path / "r18.pth")
    enc = load_timm(f"resnet18@{tmp_path / 'r18.pth'}")
    assert enc.dim == 512
    ref = enc.encode_images(images[1])
    enc2 = load_timm(f"resnet18@{tmp_path / 'r18.pth'}")
    np.testing.assert_allclose(enc2.encode_images(images[1]), ref, atol=1e-5)
