"""torch.hub entry points of simsiam-hub; the code lives in ``simsiam_hub/hubconf.py``.

model = torch.hub.load("simsiam-hub/simsiam-hub", "simsiam_resnet50", pretrained=True)
"""

from simsiam_hub.hubconf import dependencies, simsiam_resnet50  # noqa: F401
