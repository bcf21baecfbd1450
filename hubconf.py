"""torch.hub entry points of simsiam-hub; the code lives in ``simsiam_hub/hubconf.py``.

model = torch.hub.load("OWNER/NAME", "simsiam_resnet50", weights="DEFAULT")
"""

from simsiam_hub.hubconf import dependencies, simsiam_resnet18, simsiam_resnet34, simsiam_resnet50  # noqa: F401
