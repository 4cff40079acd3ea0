"""models.inference.for_inference: channels-last weights for 2-D registration, same fields."""

import torch

from models.inference import for_inference, predict_deformation
from models.networks.estimator import EstimatorConfig
from models.networks.registry import build_estimator


def estimator(ndim: int):
    torch.manual_seed(0)
    net = build_estimator(EstimatorConfig(ndim=ndim, enc=(4, 8), dec=(8, 8, 4)))
    with torch.no_grad():
        net.flow.weight.normal_(0.0, 5.0)  # fields of a voxel or more, not the fresh head's ~0
    return net.eval()


def test_a_2d_estimator_gets_channels_last_weights_and_the_same_fields():
    net = estimator(2)
    moving, fixed = torch.rand(3, 1, 32, 32), torch.rand(3, 1, 32, 32)
    before = predict_deformation(net, moving, fixed)
    assert before.disp.abs().max() > 0.5
    assert for_inference(net, 2) is net
    convs = [m.weight for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in convs)
    after = predict_deformation(net, moving, fixed)
    for name in ("vel", "disp", "disp_inv"):
        torch.testing.assert_close(getattr(after, name), getattr(before, name), atol=1e-4, rtol=1e-4)
    for_inference(net, 2)  # again: nothing changes
    torch.testing.assert_close(predict_deformation(net, moving, fixed).disp, after.disp)


def test_a_3d_estimator_is_left_as_it_is():
    net = estimator(3)
    layouts = [m.weight.is_contiguous() for m in net.modules() if isinstance(m, torch.nn.Conv3d)]
    for_inference(net, 3)
    assert [m.weight.is_contiguous() for m in net.modules() if isinstance(m, torch.nn.Conv3d)] == layouts
    assert all(layouts)
