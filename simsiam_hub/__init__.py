"""simsiam-hub: SimSiam pretraining, Hub-ready ResNet-50 backbones and detection transfer."""

__version__ = "0.1.0"
